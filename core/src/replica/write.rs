//! Local writes: sealing saves, compaction, and consent changes.

use std::collections::BTreeSet;

use crate::{
    blob::{
        AuthorshipProof, BLOB_LEDGER_HEADS_MAX, BLOB_PROOFS_MAX, BLOB_REPLACES_MAX, Blob,
        BlobHeader, BlobKind,
    },
    changes::provenance::ChangeGraph,
    consent::{self, ConsentError},
    keys::{BlobId, PeerId, SigningKey},
    ledger::{CLOSE_ACCEPTED_MAX, Ledger, OpBody, SignedOp},
    record::Record,
    section::Section,
    store::Store,
    vault::Batch,
};

use super::{
    COMPACT_SAVE_BYTES_MIN, RUN_BLOBS_MAX, RUN_BLOBS_MIN, RUN_PLAINTEXT_BYTES_MAX, Replica,
    ReplicaError, Result,
};

impl Replica {
    /// Seals the record's unsaved changes, one blob per changed section, and stores them
    /// durably; returns the ids of the blobs written. Compacts a section's blobs when enough
    /// have gathered (owner devices only).
    pub fn save(
        &mut self,
        store: &dyn Store,
        device: &SigningKey,
        record: &mut Record,
        now_ms: i64,
    ) -> Result<Vec<BlobId>> {
        self.save_with(store, device, record, Vec::new(), now_ms)
    }

    /// [`Replica::save`], storing `sealed` (blobs from [`Replica::seal_to_owners`], say the
    /// audit entry of this very write) in the same durable transaction: both land or neither.
    pub fn save_with(
        &mut self,
        store: &dyn Store,
        device: &SigningKey,
        record: &mut Record,
        sealed: Vec<Blob>,
        now_ms: i64,
    ) -> Result<Vec<BlobId>> {
        let changes = record.take_unsaved();
        if changes.is_empty() {
            if !sealed.is_empty() {
                self.store_sealed(store, sealed)?;
            }
            return Ok(Vec::new());
        }
        let mut batch = Batch::new();
        for blob in &sealed {
            batch.blob(self.id, blob.header().section, blob);
        }
        for op in consent::repair(&mut self.ledger, &mut self.keyring, device, now_ms)? {
            batch.ledger_op(self.id, &op);
        }
        let mut ledger = self.ledger.clone();
        let closes = close_withdrawn(
            &mut ledger,
            |party, sections| self.blobs_by(party, sections),
            |party, sections| self.pinned_heads(store, party, sections),
            device,
            now_ms,
        )?;
        self.ledger = ledger;
        for op in closes {
            batch.ledger_op(self.id, &op);
        }
        let owner = self.ledger.state().is_owner(&self.me);
        let mut compact = Vec::new();
        let mut written = Vec::new();
        let mut blobs = Vec::new();
        for (section, bytes) in changes {
            if owner && bytes.len() >= COMPACT_SAVE_BYTES_MIN {
                compact.push(section);
                continue;
            }
            // A blob every reader would skip (its changes too large once inflated) is refused
            // here, so the writer is told instead of the write vanishing at every reader.
            let (_, heads) = crate::changes::check_authorship_hashes(&device.peer_id(), &bytes)
                .map_err(ReplicaError::Unreadable)?;
            // The proof that outlives this blob once a compaction replaces it.
            let proofs = AuthorshipProof::sign(self.id, section, heads, device)
                .into_iter()
                .collect();
            let blob = self.seal(
                device,
                section,
                &bytes,
                Carried {
                    kind: BlobKind::Changes,
                    replaces: Vec::new(),
                    proofs,
                },
                now_ms,
            )?;
            // A blob every peer would refuse (a grantee writing outside its grant) is never
            // stored here either.
            consent::check_blob(&blob, &self.ledger, self.id, section)
                .map_err(ConsentError::from)?;
            written.push(blob.id());
            batch.blob(self.id, section, &blob);
            blobs.push((section, blob));
        }
        store.commit(batch)?;
        self.held = true;
        for (section, blob) in blobs {
            self.materialised
                .entry(section)
                .or_default()
                .push(blob.id());
            self.proofs
                .entry(section)
                .or_default()
                .extend(blob.header().proofs.iter().cloned());
            self.note_blob(section, &blob);
        }
        for blob in &sealed {
            self.note_blob(blob.header().section, blob);
        }
        if owner {
            let due: Vec<Section> = self
                .materialised
                .keys()
                .copied()
                .filter(|section| !compact.contains(section) && self.wants_compaction(*section))
                .collect();
            compact.extend(due);
        }
        for section in compact {
            written.push(self.compact_section(store, device, record, section, now_ms)?);
        }
        Ok(written)
    }

    /// Rewrites a section's materialised blobs as one compaction blob that replaces them.
    pub fn compact_section(
        &mut self,
        store: &dyn Store,
        device: &SigningKey,
        record: &mut Record,
        section: Section,
        now_ms: i64,
    ) -> Result<BlobId> {
        if !self.ledger.state().is_owner(&self.me) {
            return Err(ReplicaError::NotOwner);
        }
        // A compaction holds the whole section, so it also stands for every blob an earlier
        // compaction replaced: a peer that holds one of those, but never saw that compaction,
        // learns from this one to drop it.
        let mut replaces: BTreeSet<BlobId> =
            store.replaced(&self.id, section)?.into_iter().collect();
        let standing = self.standing_in(store, section)?;
        replaces.extend(
            self.materialised
                .get(&section)
                .into_iter()
                .flatten()
                .filter(|id| !standing.contains(id)),
        );
        let replaces: Vec<BlobId> = replaces.into_iter().take(BLOB_REPLACES_MAX).collect();
        let bytes = record.save_section(section);
        // A compaction every reader would skip (its document too large once inflated) is
        // refused here, so the writer is told instead of the section vanishing at every reader.
        crate::changes::check_document(&bytes).map_err(ReplicaError::Unreadable)?;
        let proofs = self.compaction_proofs(device, record, section);
        let blob = self.seal(
            device,
            section,
            &bytes,
            Carried {
                kind: BlobKind::Compaction,
                replaces: replaces.clone(),
                proofs: proofs.clone(),
            },
            now_ms,
        )?;
        let mut batch = Batch::new();
        for old in &replaces {
            batch.replace(self.id, section, *old, blob.id());
        }
        batch.blob(self.id, section, &blob);
        store.commit(batch)?;
        self.unnote_blobs(section, |id| replaces.contains(id));
        self.note_blob(section, &blob);
        self.materialised.insert(section, vec![blob.id()]);
        self.proofs.insert(section, proofs);
        Ok(blob.id())
    }

    /// Replaces a run of this device's own changes blobs of `section`, among `ids`, by one
    /// compaction of their changes alone, packed in one stream ([`crate::changes::packed`]), and
    /// stores it durably; returns its id, or `None` if fewer than [`RUN_BLOBS_MIN`] qualify.
    ///
    /// A sync session calls it for the blobs a peer lacks, before offering them
    /// (`sync::session`): ten home readings then travel as one blob of about 1.5 KB instead of
    /// ten of about 740 bytes. To readers it is a compaction like any other (an owner's, holding
    /// changes its proofs prove, replacing the blobs it lists, each deleted by a reader only once
    /// it has checked that the run holds every change of it); it differs only in holding some
    /// changes of the section, not all, which a compaction may (a later compaction of the whole
    /// section replaces it in turn).
    ///
    /// What qualifies: a changes blob stored here, written by this device, sealed with the
    /// section's current key (a run never moves changes to another key), outside `audit` (whose
    /// entries are confirmed to their senders one by one), up to [`RUN_BLOBS_MAX`] blobs and
    /// [`RUN_PLAINTEXT_BYTES_MAX`] of changes. Owner devices only: only an owner's compaction
    /// replaces anything.
    pub fn form_run(
        &mut self,
        store: &dyn Store,
        device: &SigningKey,
        section: Section,
        ids: &[BlobId],
        now_ms: i64,
    ) -> Result<Option<BlobId>> {
        if device.peer_id() != self.me
            || section == Section::Audit
            || !self.ledger.state().is_owner(&self.me)
        {
            return Ok(None);
        }
        let Ok((_, key)) = consent::writing_key(&self.ledger, &self.keyring, section, now_ms)
        else {
            return Ok(None);
        };
        let key = key.clone();
        let Some(stored) = self.blobs.get(&section) else {
            return Ok(None);
        };
        let mut candidates: Vec<(u64, BlobId)> = ids
            .iter()
            .filter_map(|id| Some((stored.get(id)?, *id)))
            .filter(|(blob, _)| blob.author == self.me && !blob.compaction)
            .map(|(blob, id)| (blob.time, id))
            .collect();
        candidates.sort();
        candidates.dedup();
        if candidates.len() < RUN_BLOBS_MIN {
            return Ok(None);
        }
        let mut run = Vec::new();
        let mut plaintext = Vec::new();
        for (_, id) in candidates.into_iter().take(RUN_BLOBS_MAX) {
            let Some(bytes) = store.blob(&self.id, section, &id)? else {
                continue;
            };
            let Ok(blob) = Blob::decode(bytes) else {
                continue;
            };
            if blob.header().kind != BlobKind::Changes || blob.header().key_id != key.id() {
                continue;
            }
            let Ok(changes) = blob.open(&key) else {
                continue;
            };
            if plaintext.len() + changes.len() > RUN_PLAINTEXT_BYTES_MAX {
                break;
            }
            plaintext.extend_from_slice(&changes);
            run.push(id);
        }
        if run.len() < RUN_BLOBS_MIN {
            return Ok(None);
        }
        // Each blob's signature proved its changes to be this device's; the run's own proofs
        // say so again, over their heads, for the compaction that carries them.
        let Ok((_, heads)) = crate::changes::check_authorship_hashes(&self.me, &plaintext) else {
            return Ok(None);
        };
        let proofs: Vec<AuthorshipProof> = heads
            .chunks(crate::blob::PROOF_HEADS_MAX)
            .filter_map(|heads| AuthorshipProof::sign(self.id, section, heads.to_vec(), device))
            .collect();
        if proofs.is_empty() || proofs.len() > BLOB_PROOFS_MAX {
            return Ok(None);
        }
        run.sort();
        let blob = self.seal(
            device,
            section,
            &crate::changes::packed::pack(&plaintext),
            Carried {
                kind: BlobKind::Compaction,
                replaces: run.clone(),
                proofs: proofs.clone(),
            },
            now_ms,
        )?;
        consent::check_blob(&blob, &self.ledger, self.id, section).map_err(ConsentError::from)?;
        let mut batch = Batch::new();
        for old in &run {
            batch.replace(self.id, section, *old, blob.id());
        }
        batch.blob(self.id, section, &blob);
        store.commit(batch)?;
        // The record as last materialised holds the run's changes if it held every blob of it:
        // then the run is what a later compaction of the record replaces. If it held only some,
        // the run stays out of that list, so no compaction of a record lacking some of its
        // changes ever replaces it.
        let whole = self
            .materialised
            .get(&section)
            .is_some_and(|held| run.iter().all(|id| held.contains(id)));
        self.unnote_blobs(section, |id| run.contains(id));
        self.note_blob(section, &blob);
        if whole {
            self.materialised
                .entry(section)
                .or_default()
                .push(blob.id());
            self.proofs.entry(section).or_default().extend(proofs);
        }
        Ok(Some(blob.id()))
    }

    /// The restricted compactions of `section` (by a party whose access ended) that still stand
    /// for a blob this node neither stores nor counts as replaced: one it wants again from its
    /// peers, since the compaction that replaced it turned out void. Such a compaction is not
    /// replaced until that blob is back, so nothing it stands for is lost meanwhile.
    fn standing_in(&self, store: &dyn Store, section: Section) -> Result<BTreeSet<BlobId>> {
        let mut standing = BTreeSet::new();
        let Some(stored) = self.blobs.get(&section) else {
            return Ok(standing);
        };
        for (id, blob) in stored {
            if !blob.compaction || !self.is_withdrawn(&blob.author) {
                continue;
            }
            let Some(bytes) = store.blob(&self.id, section, id)? else {
                continue;
            };
            let Ok(blob) = Blob::decode(bytes) else {
                continue;
            };
            for old in &blob.header().replaces {
                if !stored.contains_key(old) && !store.is_replaced(&self.id, section, old)? {
                    standing.insert(*id);
                    break;
                }
            }
        }
        Ok(standing)
    }

    /// The authorship proofs a compaction of `section` carries: those of the blobs it replaces
    /// (verified when they were loaded), and one of this device over its own changes, less those
    /// a later proof of the same signer makes redundant. Changes that no proof covers (written
    /// before proofs existed) stay unproven in the compaction, as they were.
    fn compaction_proofs(
        &self,
        device: &SigningKey,
        record: &mut Record,
        section: Section,
    ) -> Vec<AuthorshipProof> {
        let graph = ChangeGraph::of(record.doc_for_provenance(section));
        let mut proofs = self.proofs_of(section).to_vec();
        let mine = graph.heads_by(&device.peer_id());
        // More heads than one proof takes (a device writing as many actors): one proof each.
        for heads in mine.chunks(crate::blob::PROOF_HEADS_MAX) {
            proofs.extend(AuthorshipProof::sign(
                self.id,
                section,
                heads.to_vec(),
                device,
            ));
        }
        let mut proofs = graph.prune(proofs);
        proofs.truncate(BLOB_PROOFS_MAX);
        proofs
    }

    /// The change heads of `party` this device holds in `sections`: those of the authorship
    /// proofs by `party` that verify, in the headers of the blobs stored (its own blobs, and the
    /// compactions that carry its proofs). What the `Pin`s of a close accept.
    pub(super) fn pinned_heads(
        &self,
        store: &dyn Store,
        party: &PeerId,
        sections: &[Section],
    ) -> Result<Vec<(Section, Vec<[u8; 32]>)>> {
        let mut out = Vec::new();
        for &section in sections {
            let mut heads: BTreeSet<[u8; 32]> = BTreeSet::new();
            for (_, bytes) in store.blobs(&self.id, section)? {
                let Ok(blob) = Blob::decode(bytes) else {
                    continue;
                };
                let proofs = blob.header().proofs.iter();
                for proof in proofs.filter(|p| p.signer == *party) {
                    if proof.verifies(self.id, section) {
                        heads.extend(proof.heads.iter().map(|h| h.0));
                    }
                }
            }
            if !heads.is_empty() {
                out.push((section, heads.into_iter().collect()));
            }
        }
        Ok(out)
    }

    /// The sections with materialised blobs (what [`Replica::compact_section`] can rewrite).
    pub fn materialised_sections(&self) -> Vec<Section> {
        self.materialised.keys().copied().collect()
    }

    /// Signs `body` with `signer` (the device key, or the record root key), brings the keys in
    /// step and stores it all durably. Returns the operations appended, the requested one first.
    /// Only owner devices change consent, except that the root key adds and removes devices.
    pub fn change_consent(
        &mut self,
        store: &dyn Store,
        signer: &SigningKey,
        device: &SigningKey,
        body: OpBody,
        now_ms: i64,
    ) -> Result<Vec<SignedOp>> {
        let root = self.ledger.state().root == Some(signer.peer_id());
        if !root && !self.ledger.state().is_owner(&self.me) {
            return Err(ReplicaError::NotOwner);
        }
        let mut ledger = self.ledger.clone();
        let mut keyring = std::mem::take(&mut self.keyring);
        let appended = (|| -> Result<Vec<SignedOp>> {
            // A party's details are sealed to the owners (under the current `audit` key) and
            // to the party; without that key (a ledger from before keys), in clear.
            let audit = consent::writing_key(&ledger, &keyring, Section::Audit, now_ms)
                .ok()
                .map(|(_, key)| key.clone());
            let op = match &audit {
                Some(audit) => ledger.append_sealed(signer, body, now_ms, audit)?,
                None => ledger.append(signer, body, now_ms)?,
            };
            let mut appended = vec![op];
            appended.extend(consent::repair(&mut ledger, &mut keyring, device, now_ms)?);
            appended.extend(close_withdrawn(
                &mut ledger,
                |party, sections| self.blobs_by(party, sections),
                |party, sections| self.pinned_heads(store, party, sections),
                device,
                now_ms,
            )?);
            Ok(appended)
        })();
        self.keyring = keyring;
        let appended = appended?;
        let mut batch = Batch::new();
        for op in &appended {
            batch.ledger_op(self.id, op);
        }
        store.commit(batch)?;
        self.ledger = ledger;
        self.held = true;
        Ok(appended)
    }

    fn seal(
        &self,
        device: &SigningKey,
        section: Section,
        plaintext: &[u8],
        carried: Carried,
        now_ms: i64,
    ) -> Result<Blob> {
        let Carried {
            kind,
            replaces,
            proofs,
        } = carried;
        let (epoch, key) = consent::writing_key(&self.ledger, &self.keyring, section, now_ms)?;
        let mut ledger_heads = self.ledger.heads();
        ledger_heads.truncate(BLOB_LEDGER_HEADS_MAX);
        let header = BlobHeader {
            record: self.id,
            section,
            kind,
            epoch,
            key_id: key.id(),
            author: device.peer_id(),
            time_ms: now_ms,
            ledger_heads,
            replaces,
            proofs,
        };
        Ok(Blob::seal(header, key, plaintext, device)?)
    }
}

/// What a blob's header carries besides who, where and when: its kind, the blobs it replaces
/// (a compaction) and its authorship proofs.
struct Carried {
    kind: BlobKind,
    replaces: Vec<BlobId>,
    proofs: Vec<AuthorshipProof>,
}

/// Pins what this owner device accepts from every party whose write access ended without a
/// `Close` yet ([`consent::closes_needed`]): one `Close` per party, accepting the blobs of it
/// this device stores in the sections closed (`blobs_by`, newest first, at most
/// [`CLOSE_ACCEPTED_MAX`]). Does nothing on a device that is not an owner.
///
/// Beside each `Close`, a `Pin` of the party's changes this device holds in those sections, by
/// the heads of the authorship proofs it stores (`heads_of`), so that readers can judge the
/// party's changes that reach them inside a compaction.
fn close_withdrawn(
    ledger: &mut Ledger,
    blobs_by: impl Fn(&PeerId, &[Section]) -> Vec<(Section, BlobId)>,
    heads_of: impl Fn(&PeerId, &[Section]) -> Result<Vec<(Section, Vec<[u8; 32]>)>>,
    device: &SigningKey,
    now_ms: i64,
) -> Result<Vec<SignedOp>> {
    if !ledger.state().is_owner(&device.peer_id()) {
        return Ok(Vec::new());
    }
    let mut appended = Vec::new();
    for (party, sections) in consent::closes_needed(ledger, now_ms) {
        let mut accepted: Vec<BlobId> = blobs_by(&party, &sections)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        accepted.truncate(CLOSE_ACCEPTED_MAX);
        let heads = heads_of(&party, &sections)?;
        let body = OpBody::Close {
            party,
            sections,
            accepted,
        };
        appended.push(ledger.append(device, body, now_ms)?);
        for pin in OpBody::pins(party, heads) {
            appended.push(ledger.append(device, pin, now_ms)?);
        }
    }
    Ok(appended)
}
