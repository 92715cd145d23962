//! Reading a replica: decrypting and applying what this node may read.

use std::collections::{BTreeMap, HashSet};

use automerge::{ActorId, ChangeHash};

use crate::{
    blob::{AuthorshipProof, Blob, BlobKind},
    changes::provenance::ChangeGraph,
    consent,
    keys::{AgeIdentity, BlobId},
    record::{Record, RecordMeta},
    section::Section,
    store::Store,
    vault::Batch,
};

use super::{Replica, Result, skipped};

impl Replica {
    /// Decrypts and applies every stored blob this node can read, into a record whose new
    /// writes are made as `actor`: those sealed with a section key it holds, and, on an owner
    /// device, the audit entries sealed to it with its age identity `age`. A blob that fails a
    /// check is skipped and described in the returned warnings; every other blob still loads.
    pub fn materialise(
        &mut self,
        store: &dyn Store,
        meta: RecordMeta,
        actor: &ActorId,
        age: &AgeIdentity,
    ) -> Result<(Record, Vec<String>)> {
        self.materialise_sections(store, meta, actor, age, &Section::ALL)
    }

    /// [`Replica::materialise`], of the given sections only: the others stay empty in the
    /// record returned (a provider listing its patients decrypts `summary` alone).
    pub fn materialise_sections(
        &mut self,
        store: &dyn Store,
        meta: RecordMeta,
        actor: &ActorId,
        age: &AgeIdentity,
        sections: &[Section],
    ) -> Result<(Record, Vec<String>)> {
        let mut warnings = Vec::new();
        self.unreadable.retain(|(s, _, _)| !sections.contains(s));
        let mut parts: BTreeMap<Section, Vec<Vec<u8>>> = BTreeMap::new();
        let mut ids: BTreeMap<Section, Vec<BlobId>> = BTreeMap::new();
        let mut provenance: BTreeMap<Section, Provenance> = BTreeMap::new();
        for &section in sections {
            for (stored_id, bytes) in store.blobs(&self.id, section)? {
                match self.open_stored(section, stored_id, bytes, age) {
                    Ok(Some(opened)) => {
                        parts.entry(section).or_default().push(opened.plaintext);
                        ids.entry(section).or_default().push(stored_id);
                        let known = provenance.entry(section).or_default();
                        known.direct.extend(opened.direct);
                        known.proofs.extend(opened.proofs);
                        known.compacted |= opened.compacted;
                    }
                    // Sealed for others (another provider's audit entries, say): not ours to read.
                    Ok(None) => {}
                    Err(problem) => {
                        self.unreadable.push((section, stored_id, problem.clone()));
                        warnings.push(problem);
                    }
                }
            }
        }
        let (mut record, mut bad) = Record::load_parts(meta, &parts, actor);
        // Remove from the last index down, so earlier indices stay right.
        bad.sort_by_key(|(section, index, _)| std::cmp::Reverse((*section, *index)));
        for (section, index, error) in bad {
            let id = ids
                .get_mut(&section)
                .expect("a bad piece belongs to a loaded section")
                .remove(index);
            let problem = skipped(section, id, &error.to_string());
            self.unreadable.push((section, id, problem.clone()));
            warnings.push(problem);
        }
        for &section in sections {
            self.materialised
                .insert(section, ids.remove(&section).unwrap_or_default());
            let known = provenance.remove(&section).unwrap_or_default();
            let stranded =
                self.exclude_void(store, &mut record, section, &known.direct, age, actor)?;
            if record.write_again(&stranded) > 0 {
                warnings.push(format!(
                    "{} of this device's entries in {section} had built on a withdrawn party's \
                     change and were written again without it",
                    stranded.len()
                ));
            }
            // Only a compaction holds changes that did not come in their author's own blob;
            // without one, every change loaded is proven by the blob it came in.
            if known.compacted {
                let graph = ChangeGraph::of(record.doc_for_provenance(section));
                record.set_unproven(section, graph.unproven(&known.direct, &known.proofs));
            }
            self.proofs.insert(section, known.proofs);
        }
        Ok((record, warnings))
    }

    /// Decodes and decrypts one stored blob: `Ok(None)` if this node holds no key for it (it
    /// may not read that section, or it is an audit entry sealed to other devices), a sentence
    /// for the user if it fails a check.
    fn open_stored(
        &self,
        section: Section,
        stored_id: BlobId,
        bytes: Vec<u8>,
        age: &AgeIdentity,
    ) -> Result<Option<Opened>, String> {
        let fail = |reason: String| skipped(section, stored_id, &reason);
        let blob = Blob::decode(bytes).map_err(|e| fail(e.to_string()))?;
        if blob.id() != stored_id {
            return Err(fail("its bytes do not match its id".into()));
        }
        // The same check a blob from a peer passes: its author could write here under the
        // consent it names.
        consent::check_blob(&blob, &self.ledger, self.id, section)
            .map_err(|e| fail(e.to_string()))?;
        // Written by a party after its access ended: never part of the record (ingest moves
        // such blobs out; this also covers a store written before the close arrived).
        if consent::withdrawn(&blob, &self.ledger) {
            return Ok(None);
        }
        let header = blob.header();
        if header.kind == BlobKind::SealedToOwners {
            let Some(plaintext) = self.open_sealed(&blob, age).map_err(fail)? else {
                return Ok(None);
            };
            let (hashes, heads) =
                crate::changes::check_authorship_hashes(&header.author, &plaintext)
                    .map_err(fail)?;
            let proofs = own_proof(&blob, &heads).map_err(fail)?;
            return Ok(Some(Opened {
                plaintext,
                direct: hashes,
                proofs,
                compacted: false,
            }));
        }
        let Some(key) = self.keyring.get(&header.key_id) else {
            if self.ledger.state().can_read(&self.me, section, i64::MAX) {
                return Err(fail("this node holds no key for it".into()));
            }
            return Ok(None);
        };
        let plaintext = blob.open(key).map_err(|e| fail(e.to_string()))?;
        if header.kind == BlobKind::Changes {
            let (hashes, heads) =
                crate::changes::check_authorship_hashes(&header.author, &plaintext)
                    .map_err(fail)?;
            let proofs = own_proof(&blob, &heads).map_err(fail)?;
            return Ok(Some(Opened {
                plaintext,
                direct: hashes,
                proofs,
                compacted: false,
            }));
        }
        // A compaction: what its proofs prove is judged once the section is loaded. A proof
        // whose signature does not verify proves nothing, and is not carried on.
        let proofs = header
            .proofs
            .iter()
            .filter(|proof| proof.verifies(self.id, section))
            .cloned()
            .collect();
        Ok(Some(Opened {
            plaintext,
            direct: Vec::new(),
            proofs,
            compacted: true,
        }))
    }

    /// Takes the void changes out of a loaded section, with everything built on them, and
    /// returns this device's current versions among what was built on them (to be written
    /// again). Void are: on an owner device, the changes of the blobs it holds for the patient
    /// (loaded here only to find what was built on them); and the changes of a party whose
    /// changes the ledger pins (`consent::change_pins`) that came in no blob of its own
    /// (`direct`) and lie in the past of no pinned head: folded into an owner's compaction
    /// before the withdrawal reached that owner.
    fn exclude_void(
        &self,
        store: &dyn Store,
        record: &mut Record,
        section: Section,
        direct: &HashSet<ChangeHash>,
        age: &AgeIdentity,
        actor: &ActorId,
    ) -> Result<Vec<crate::record::Stranded>> {
        let pins = consent::change_pins(&self.ledger, section);
        let mut void: HashSet<ChangeHash> = HashSet::new();
        if self.ledger.state().is_owner(&self.me) {
            for (held_section, id, bytes) in store.held(&self.id)? {
                if held_section != section {
                    continue;
                }
                let Some(plain) = self.plaintext_of_held(bytes, age) else {
                    continue;
                };
                let Ok((hashes, _)) = crate::changes::check_authorship_hashes(
                    &self.held_blobs.get(&id).map_or(self.me, |held| held.author),
                    &plain,
                ) else {
                    continue;
                };
                if record.load_more(section, &plain) {
                    void.extend(hashes.into_iter().filter(|h| !direct.contains(h)));
                }
            }
        }
        if void.is_empty() && pins.is_empty() {
            return Ok(Vec::new());
        }
        let graph = ChangeGraph::of(record.doc_for_provenance(section));
        for (party, heads) in &pins {
            let accepted = graph.past_of(heads.iter().copied());
            void.extend(
                graph
                    .changes_by(party)
                    .into_iter()
                    .filter(|hash| !direct.contains(hash) && !accepted.contains(hash)),
            );
        }
        if void.is_empty() {
            return Ok(Vec::new());
        }
        let excluded = graph.with_descendants(&void);
        Ok(record.exclude(section, &excluded, &graph, actor))
    }

    /// The plaintext of a blob held for the patient, if this device can open it.
    fn plaintext_of_held(&self, bytes: Vec<u8>, age: &AgeIdentity) -> Option<Vec<u8>> {
        let blob = Blob::decode(bytes).ok()?;
        if blob.header().kind == BlobKind::SealedToOwners {
            return self.open_sealed(&blob, age).ok().flatten();
        }
        self.keyring
            .get(&blob.header().key_id)
            .and_then(|key| blob.open(key).ok())
    }

    /// The verified authorship proofs of the blobs the last materialise loaded in `section`.
    pub(super) fn proofs_of(&self, section: Section) -> &[AuthorshipProof] {
        self.proofs.get(&section).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The stored blobs the last materialise could not read, with why: damaged copies, and
    /// blobs that pass every check at the gate yet fail to load (too large once inflated, say).
    pub fn unreadable(&self) -> &[(Section, BlobId, String)] {
        &self.unreadable
    }

    /// Removes an unreadable blob. A peer's good copy is taken in at the next sync, unless
    /// `for_good`: then it is remembered as replaced, and no sync takes it in again (a blob that
    /// fails to load wherever it goes). The rest of the record is untouched.
    pub fn remove_unreadable(
        &mut self,
        store: &dyn Store,
        id: &BlobId,
        for_good: bool,
    ) -> Result<bool> {
        let Some(index) = self.unreadable.iter().position(|(_, bad, _)| bad == id) else {
            return Ok(false);
        };
        let (section, id, _) = self.unreadable.remove(index);
        let mut batch = Batch::new();
        if for_good {
            batch.replace(self.id, section, id, id);
        } else {
            batch.remove_blob(self.id, section, id);
        }
        store.commit(batch)?;
        self.unnote_blobs(section, |stored| *stored == id);
        Ok(true)
    }
}

/// One stored blob, opened.
struct Opened {
    plaintext: Vec<u8>,
    /// The hashes of its changes, if its signature proves their author (not a compaction).
    direct: Vec<ChangeHash>,
    /// The authorship proofs it carries that verify.
    proofs: Vec<AuthorshipProof>,
    /// Whether it is a compaction.
    compacted: bool,
}

/// What is known of the authors of one section's changes, gathered blob by blob.
#[derive(Default)]
struct Provenance {
    direct: HashSet<ChangeHash>,
    proofs: Vec<AuthorshipProof>,
    compacted: bool,
}

/// The authorship proof of a changes blob or an audit entry, checked against the heads of the
/// changes it holds (`heads`): an honest author signs exactly those. A blob of layout version 1
/// carries none; a proof that does not match its changes makes the blob unreadable, since its
/// author sealed it wrongly or forged it.
fn own_proof(blob: &Blob, heads: &[ChangeHash]) -> Result<Vec<AuthorshipProof>, String> {
    let header = blob.header();
    let Some(proof) = header.proofs.first() else {
        return Ok(Vec::new());
    };
    if proof.heads != heads || !proof.verifies(header.record, header.section) {
        return Err("its authorship proof does not match its changes".into());
    }
    Ok(vec![proof.clone()])
}
