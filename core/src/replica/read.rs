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
        // Per section, beside each piece: its blob, and the hashes of its changes if it is
        // not a compaction (a compaction's are read only when some change was left out).
        let mut pieces_of: BTreeMap<Section, Vec<Piece>> = BTreeMap::new();
        for &section in sections {
            for (stored_id, bytes) in store.blobs(&self.id, section)? {
                match self.open_stored(section, stored_id, bytes, age) {
                    Ok(Some(opened)) => {
                        let pieces = parts.entry(section).or_default();
                        let known = provenance.entry(section).or_default();
                        if opened.compacted {
                            known.compactions.push((pieces.len(), opened.restricted));
                        }
                        pieces.push(opened.plaintext);
                        ids.entry(section).or_default().push(stored_id);
                        let hashes = (!opened.compacted).then(|| opened.direct.clone());
                        pieces_of
                            .entry(section)
                            .or_default()
                            .push((stored_id, hashes));
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
            let known = provenance.remove(&section).unwrap_or_default();
            let restricted =
                restricted_only(&known, parts.get(&section).map_or(&[], Vec::as_slice));
            let void = Void {
                direct: &known.direct,
                restricted: &restricted,
                proofs: &known.proofs,
                compacted: known.compacted,
            };
            // Changes waiting for a dependency, before held blobs are loaded beside them.
            let waiting = if self.ledger.state().closes.is_empty() {
                Vec::new()
            } else {
                record.queued(section)
            };
            let Excluded {
                mut stranded,
                excluded,
                direct: kept_direct,
                proofs: kept_proofs,
                unproven,
            } = self.exclude_void(store, &mut record, section, &void, age, actor)?;
            // This device's own changes that still wait, or were taken out waiting: built on a
            // void change it dropped. Its current versions among them are written again.
            if !waiting.is_empty() {
                let graph = ChangeGraph::of(record.doc_for_provenance(section));
                let waiting: Vec<_> = waiting
                    .into_iter()
                    .filter(|c| !excluded.contains(&c.hash()) && !graph.contains(&c.hash()))
                    .collect();
                stranded.extend(record.strand_queued(section, actor, &waiting));
            }
            let mut known = known;
            known.direct.extend(kept_direct);
            known.proofs.extend(kept_proofs);
            // This device's own changes that only a restricted compaction still holds: issued
            // again in a blob of its own, so that they reach the devices that refused it.
            if !restricted.is_empty() {
                let graph = ChangeGraph::of(record.doc_for_provenance(section));
                let mut mine = graph.of_device(actor, &restricted);
                mine.retain(|hash| !excluded.contains(hash) && graph.contains(hash));
                record.reissue(section, &mine);
            }
            // A compaction stands only for blobs whose changes it holds: not for one with a
            // change left out.
            let mut loaded = ids.remove(&section).unwrap_or_default();
            // Changes whose dependencies are missing wait in Automerge's queue, unapplied (built
            // on a void change this device no longer holds, say): their blobs are not in it.
            let queued = !record
                .doc_for_provenance(section)
                .get_missing_deps(&[])
                .is_empty();
            if !excluded.is_empty() || queued {
                let present = queued.then(|| ChangeGraph::of(record.doc_for_provenance(section)));
                let pieces = parts.get(&section).map_or(&[][..], Vec::as_slice);
                let metas = pieces_of.get(&section).map_or(&[][..], Vec::as_slice);
                loaded.retain(|id| {
                    let Some(index) = metas.iter().position(|(piece, _)| piece == id) else {
                        return false;
                    };
                    match &metas[index].1 {
                        Some(hashes) => hashes.iter().all(|h| {
                            !excluded.contains(h)
                                && present.as_ref().is_none_or(|graph| graph.contains(h))
                        }),
                        None => !changes_of(&pieces[index])
                            .iter()
                            .any(|h| excluded.contains(h)),
                    }
                });
            }
            self.materialised.insert(section, loaded);
            // Only a compaction holds changes that did not come in their author's own blob;
            // without one, every change loaded is proven by the blob it came in.
            if let Some(unproven) = unproven {
                record.set_unproven(section, unproven);
            } else if known.compacted {
                let graph = ChangeGraph::of(record.doc_for_provenance(section));
                record.set_unproven(section, graph.unproven(&known.direct, &known.proofs));
            }
            // Written by this device now: its own, proven by its signature once saved.
            if record.write_again(&stranded) > 0 {
                warnings.push(format!(
                    "{} of this device's entries in {section} had built on a withdrawn party's \
                     change and were written again without it",
                    stranded.len()
                ));
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
        // such blobs out; this also covers a store written before the close arrived). A
        // compaction stays, restricted to what its authors' proofs prove.
        let restricted = consent::withdrawn(&blob, &self.ledger);
        if restricted && blob.header().kind != BlobKind::Compaction {
            return Ok(None);
        }
        let header = blob.header();
        let plaintext = if header.kind == BlobKind::SealedToOwners {
            let Some(plaintext) = self.open_sealed(&blob, age).map_err(fail)? else {
                return Ok(None);
            };
            plaintext
        } else {
            let Some(key) = self.keyring.get(&header.key_id) else {
                if self.ledger.state().can_read(&self.me, section, i64::MAX) {
                    return Err(fail("this node holds no key for it".into()));
                }
                return Ok(None);
            };
            blob.open(key).map_err(|e| fail(e.to_string()))?
        };
        // A changes blob or an audit entry: its signature proves every change in it.
        if header.kind != BlobKind::Compaction {
            let (hashes, heads) =
                crate::changes::check_authorship_hashes(&header.author, &plaintext)
                    .map_err(fail)?;
            let proofs = own_proof(&blob, &heads).map_err(fail)?;
            return Ok(Some(Opened {
                plaintext,
                direct: hashes,
                proofs,
                compacted: false,
                restricted: false,
            }));
        }
        // A compaction: bounded before Automerge inflates it (a removed device's stays stored).
        crate::changes::check_document(&plaintext).map_err(fail)?;
        // What its proofs prove is judged once the section is loaded. A proof
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
            restricted,
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
        known: &Void<'_>,
        age: &AgeIdentity,
        actor: &ActorId,
    ) -> Result<Excluded> {
        let direct = known.direct;
        let pins = consent::change_pins(&self.ledger, section);
        let mut void: HashSet<ChangeHash> = HashSet::new();
        let mut held: Vec<(crate::keys::PeerId, Vec<ChangeHash>, Vec<AuthorshipProof>)> =
            Vec::new();
        // The changes the stored blobs hold, before any held blob is loaded beside them.
        let mut stored: Option<ChangeGraph> = None;
        if self.ledger.state().is_owner(&self.me) {
            for (held_section, _, bytes) in store.held(&self.id)? {
                if held_section != section {
                    continue;
                }
                if stored.is_none() {
                    stored = Some(ChangeGraph::of(record.doc_for_provenance(section)));
                }
                let Some((blob, plain)) = self.plaintext_of_held(bytes, age) else {
                    continue;
                };
                let author = blob.header().author;
                let Ok((hashes, heads)) = crate::changes::check_authorship_hashes(&author, &plain)
                else {
                    continue;
                };
                let Ok(proofs) = own_proof(&blob, &heads) else {
                    continue;
                };
                if record.load_more(section, &plain) {
                    held.push((author, hashes, proofs));
                }
            }
        }
        if held.is_empty() && pins.is_empty() && known.restricted.is_empty() {
            return Ok(Excluded::default());
        }
        let graph = ChangeGraph::of(record.doc_for_provenance(section));
        // Only in a restricted compaction: counts if its own author's proof proves it.
        void.extend(graph.unproven_among(known.restricted, known.proofs));
        let accepted: std::collections::BTreeMap<_, HashSet<ChangeHash>> = pins
            .iter()
            .map(|(party, heads)| (*party, graph.past_of(heads.iter().copied())))
            .collect();
        for (party, accepted) in &accepted {
            void.extend(
                graph
                    .changes_by(party)
                    .into_iter()
                    .filter(|hash| !direct.contains(hash) && !accepted.contains(hash)),
            );
        }
        // A held blob is void as a blob, and so are its changes, unless a stored blob holds
        // them too (an owner compacted them before it closed their author, so its close could
        // not name the blob): then they count where the owners pinned them, like any other
        // change of their author's. Those it keeps are proven by the held blob's signature,
        // and a compaction carries its proof.
        let mut out = Excluded::default();
        for (author, hashes, proofs) in held {
            let pinned = accepted.get(&author);
            let also_stored = |h: &ChangeHash| stored.as_ref().is_some_and(|g| g.contains(h));
            let (kept, gone): (Vec<ChangeHash>, Vec<ChangeHash>) =
                hashes.into_iter().partition(|h| {
                    direct.contains(h)
                        || (also_stored(h) && pinned.is_some_and(|accepted| accepted.contains(h)))
                });
            if !kept.is_empty() {
                out.direct.extend(kept);
                out.proofs.extend(proofs);
            }
            void.extend(gone);
        }
        // Who wrote what is judged on the whole graph, void changes included: a head an
        // author signed proves its past even if the head itself is void now.
        if known.compacted {
            let mut direct = direct.clone();
            direct.extend(out.direct.iter().copied());
            let mut proofs = known.proofs.to_vec();
            proofs.extend(out.proofs.iter().cloned());
            out.unproven = Some(graph.unproven(&direct, &proofs));
        }
        if void.is_empty() {
            return Ok(out);
        }
        out.excluded = graph.with_descendants(&void);
        // Void changes that wait for a missing dependency are not in the graph: taken out too,
        // not kept waiting (and saved in a compaction) where the others are.
        out.excluded.extend(void.iter().copied());
        out.stranded = record.exclude(section, &void, &out.excluded, &graph, actor);
        Ok(out)
    }

    /// The plaintext of a blob held for the patient, if this device can open it.
    fn plaintext_of_held(&self, bytes: Vec<u8>, age: &AgeIdentity) -> Option<(Blob, Vec<u8>)> {
        let blob = Blob::decode(bytes).ok()?;
        let plain = if blob.header().kind == BlobKind::SealedToOwners {
            self.open_sealed(&blob, age).ok().flatten()?
        } else {
            let key = self.keyring.get(&blob.header().key_id)?;
            blob.open(key).ok()?
        };
        Some((blob, plain))
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

/// One loaded piece of a section: its blob, and the hashes of its changes if it is not a
/// compaction.
type Piece = (BlobId, Option<Vec<ChangeHash>>);

/// What [`Replica::exclude_void`] took out of a section, and what it kept of held blobs.
#[derive(Default)]
struct Excluded {
    /// This device's current versions among what was taken out, to be written again.
    stranded: Vec<crate::record::Stranded>,
    /// The changes taken out: void ones and everything built on them.
    excluded: HashSet<ChangeHash>,
    /// Changes of held blobs that count (pinned), proven by those blobs' signatures.
    direct: Vec<ChangeHash>,
    /// The authorship proofs of those held blobs, for a compaction to carry.
    proofs: Vec<AuthorshipProof>,
    /// What no signature proves, judged before anything was taken out (`None`: not judged).
    unproven: Option<Vec<crate::changes::provenance::Unproven>>,
}

/// What [`Replica::exclude_void`] judges a section's changes by.
struct Void<'a> {
    /// The changes that came in blobs their authors signed.
    direct: &'a HashSet<ChangeHash>,
    /// The changes found only in restricted compactions (by a party whose writing was closed).
    restricted: &'a HashSet<ChangeHash>,
    /// The verified authorship proofs of the section's blobs.
    proofs: &'a [AuthorshipProof],
    /// Whether the section holds a compaction (else every change is proven by its blob).
    compacted: bool,
}

/// The changes of a section found in its restricted compactions and nowhere else: not in a
/// changes blob, nor in a compaction by a current owner. Loads each compaction of the section
/// on its own, so only when a restricted one is there.
fn restricted_only(known: &Provenance, pieces: &[Vec<u8>]) -> HashSet<ChangeHash> {
    if !known.compactions.iter().any(|(_, restricted)| *restricted) {
        return HashSet::new();
    }
    let hashes = |index: usize| -> HashSet<ChangeHash> {
        pieces
            .get(index)
            .map(|piece| changes_of(piece))
            .unwrap_or_default()
    };
    let mut only: HashSet<ChangeHash> = HashSet::new();
    let mut elsewhere: HashSet<ChangeHash> = known.direct.clone();
    for (index, restricted) in &known.compactions {
        if *restricted {
            only.extend(hashes(*index));
        } else {
            elsewhere.extend(hashes(*index));
        }
    }
    only.retain(|hash| !elsewhere.contains(hash));
    only
}

/// The hashes of the changes of one stored piece (a compaction's document), loaded on its own.
fn changes_of(piece: &[u8]) -> HashSet<ChangeHash> {
    crate::changes::load_document(piece)
        .ok()
        .map(|mut doc| {
            doc.get_changes_meta(&[])
                .into_iter()
                .map(|meta| meta.hash)
                .collect()
        })
        .unwrap_or_default()
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
    /// Whether it is a compaction by a party whose writing an owner closed.
    restricted: bool,
}

/// What is known of the authors of one section's changes, gathered blob by blob.
#[derive(Default)]
struct Provenance {
    direct: HashSet<ChangeHash>,
    proofs: Vec<AuthorshipProof>,
    compacted: bool,
    /// The section's compactions, by index among its pieces, and whether each is restricted.
    compactions: Vec<(usize, bool)>,
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
