//! The ingest gate: everything a peer sends enters a replica here (see the module
//! documentation of [`super`]).

use std::collections::BTreeSet;

use crate::{
    blob::{Blob, BlobKind},
    consent::{self, IngestError},
    keys::{AgeIdentity, BlobId, OpId, PeerId, RecordId},
    ledger::{Ledger, OpBody, SignedOp},
    section::Section,
    store::Store,
    vault::Batch,
};

use super::{
    Ingested, Keyring, PENDING_BLOBS_MAX, PENDING_BYTES_MAX, Replica, Result, Topic, VOID_IDS_MAX,
    may_hold, refused,
};

impl Replica {
    /// Takes items a peer sent: ledger operations first (blobs are judged by them), then blobs.
    /// Everything is checked before anything is stored; one item no honest node would send
    /// refuses the whole lot ([`crate::replica::ReplicaError::Refused`]) and stores nothing. Blobs of sections
    /// this node may not hold are dropped; blobs naming ledger operations it lacks wait in a
    /// bounded buffer. What is stored is committed in one durable batch.
    pub fn ingest(
        &mut self,
        store: &dyn Store,
        age: &AgeIdentity,
        items: Vec<(Topic, Vec<u8>)>,
        now_ms: i64,
    ) -> Result<Ingested> {
        // The ledger is moved out, not copied: a refusal takes back what was admitted.
        let mut ledger = std::mem::replace(&mut self.ledger, Ledger::new(self.id));
        let mut admitted = Vec::new();
        let result = self.ingest_under(&mut ledger, &mut admitted, store, age, items, now_ms);
        if result.is_err() {
            ledger.forget(&admitted);
        }
        self.ledger = ledger;
        result
    }

    /// [`Replica::ingest`] with the ledger moved out of `self`; `admitted` gathers the ids of
    /// operations taken into it, so that a refusal can take them back.
    fn ingest_under(
        &mut self,
        ledger: &mut Ledger,
        admitted: &mut Vec<OpId>,
        store: &dyn Store,
        age: &AgeIdentity,
        items: Vec<(Topic, Vec<u8>)>,
        now_ms: i64,
    ) -> Result<Ingested> {
        let mut report = Ingested::default();
        let mut ops = Vec::new();
        let mut blobs = Vec::new();
        for (topic, bytes) in items {
            match topic {
                Topic::Ledger => {
                    ops.push(SignedOp::decode(&bytes).map_err(|e| refused(topic, "?", e))?);
                }
                Topic::Section(section) => {
                    let blob = Blob::decode(bytes).map_err(|e| refused(topic, "?", e))?;
                    blobs.push((section, blob));
                }
            }
        }
        // Operations that can never count are not kept, nor held against the sender: a relay
        // or an honest peer may pass on what it holds from before this rule.
        let admission = ledger
            .admit(ops)
            .map_err(|e| refused(Topic::Ledger, "?", e))?;
        admitted.extend(admission.new.iter().map(SignedOp::id));
        report.duplicates += admission.duplicates;
        report.dropped_ops = admission.dropped;
        let new_ops = admission.new;
        let ledger = &*ledger;
        // A record not held yet is taken in only if its ledger admits this node.
        let keep_ops = self.held || (self.welcome && ledger.state().admitted(&self.me, now_ms));

        let new_keys = new_ops
            .iter()
            .any(|op| matches!(op.op().body, OpBody::Keys { .. }));
        let new_closes: BTreeSet<PeerId> = new_ops
            .iter()
            .filter_map(|op| match &op.op().body {
                OpBody::Close { party, .. } => Some(*party),
                _ => None,
            })
            .collect();
        // The keys as they will be, so that a compaction that arrives with its key is checked.
        // Keys held already are not unwrapped again; new ones are kept in the store.
        let unlocked = (keep_ops && new_keys)
            .then(|| Keyring::unlock_kept(ledger, &self.me, age, self.keyring.kept()));
        let keyring = unlocked.as_ref().unwrap_or(&self.keyring);
        let owner = ledger.state().is_owner(&self.me);

        // Judge the blobs under the ledger as it will be, the buffered ones too.
        let mut batch = Batch::new().from_peer();
        if let Some(unlocked) = unlocked.as_ref().filter(|_| store.vouches()) {
            for (section, epoch, key) in unlocked.not_in(self.keyring.kept()) {
                batch.keep_key(self.id, section, epoch, key);
            }
        }
        let mut plan = Plan::default();
        let mut accepted_ids: BTreeSet<BlobId> = BTreeSet::new();
        let mut buffered: Vec<(Section, Blob)> = Vec::new();
        let waiting = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let from_peer = blobs.len();
        for (index, (section, blob)) in blobs.into_iter().chain(waiting.into_values()).enumerate() {
            let topic = Topic::Section(section);
            let id = blob.id();
            let theirs = index < from_peer;
            let held = self
                .blobs
                .get(&section)
                .is_some_and(|b| b.contains_key(&id))
                || accepted_ids.contains(&id)
                || self.held_blobs.contains_key(&id)
                || plan.held.iter().any(|(_, b)| b.id() == id)
                || self.void.contains(&id)
                || store.is_replaced(&self.id, section, &id)?;
            if held {
                report.duplicates += usize::from(theirs);
                continue;
            }
            if !keep_ops || !may_hold(ledger, &self.me, section, now_ms) {
                report.unwanted += 1;
                continue;
            }
            match consent::check_blob(&blob, ledger, self.id, section) {
                // Written by a party after its access ended: it changes nothing here. Not the
                // sender's fault (a relay passes on what it cannot judge).
                Ok(()) if consent::withdrawn(&blob, ledger) => {
                    report.void += 1;
                    self.hold_or_drop(owner, section, blob, &mut batch, &mut plan);
                }
                Ok(()) => {
                    // What a compaction replaces here makes room for it.
                    let freed = self.bytes_of(section, &blob.header().replaces);
                    let grows = blob.len().saturating_sub(freed);
                    if self.stored_bytes + plan.bytes + grows > self.quota {
                        report.over_quota += 1;
                        continue;
                    }
                    plan.bytes += grows;
                    accepted_ids.insert(id);
                    plan.accepted.push((section, blob));
                }
                Err(IngestError::UnknownLedgerHeads(_)) => buffered.push((section, blob)),
                Err(e) if theirs => return Err(refused(topic, &id.short(), e)),
                // A buffered blob that the ledger now refuses was never stored: drop it.
                Err(_) => {}
            }
        }
        if keep_ops && !new_closes.is_empty() {
            self.rejudge(store, ledger, owner, &new_closes, &mut batch, &mut plan)?;
        }

        if keep_ops && !self.held {
            // The ledger now admits this node: store all of it, also what came in earlier
            // messages and was kept in memory only.
            for op in ledger.ops() {
                batch.ledger_op(self.id, op);
            }
        } else if keep_ops {
            for op in &new_ops {
                batch.ledger_op(self.id, op);
            }
            for id in &admission.removed {
                batch.remove_ledger_op(self.id, *id);
            }
        }
        let mut replaced: Vec<(Section, BTreeSet<BlobId>)> = Vec::new();
        // A compaction of a party a new `Close` accepts, stored here after the party's removal
        // but before the close (so it replaced nothing then): it replaces what it lists now,
        // as it did on the owner devices that took it in while the party was an owner.
        if keep_ops && !new_closes.is_empty() {
            for (section, blob) in self.accepted_compactions(store, ledger, &new_closes)? {
                let ids = self.verified_replaces(store, ledger, keyring, age, section, &blob)?;
                for old in &ids {
                    batch.replace(self.id, section, *old, blob.id());
                }
                replaced.push((section, ids));
            }
        }
        for (section, blob) in &plan.accepted {
            if blob.header().kind == BlobKind::Compaction {
                let ids = self.verified_replaces(store, ledger, keyring, age, *section, blob)?;
                for old in &ids {
                    batch.replace(self.id, *section, *old, blob.id());
                }
                replaced.push((*section, ids));
            }
        }
        // Wanted again, unless a compaction of this same batch replaces it (a store applies
        // forgetting after the replacements of a batch).
        for (section, old) in &plan.unreplaced {
            let again = replaced
                .iter()
                .any(|(s, ids)| s == section && ids.contains(old));
            if !again {
                batch.unreplace(self.id, *section, *old);
            }
        }
        for (section, blob) in &plan.accepted {
            // A blob that a compaction of this same batch replaces is not stored, whichever
            // came first in the batch.
            let superseded = replaced
                .iter()
                .any(|(s, ids)| s == section && ids.contains(&blob.id()));
            if !superseded {
                batch.blob(self.id, *section, blob);
            }
        }
        if !batch.is_empty() {
            store.commit(batch)?;
        }

        // The batch is durable: now change what is in memory.
        report.ops = new_ops.len();
        // A ledger that does not admit this node yet stays in memory only (bounded by
        // `LEDGER_OPS_MAX`): the rest of it may come in the next message.
        if keep_ops {
            self.held = true;
            if let Some(unlocked) = unlocked {
                self.keyring = unlocked;
            }
            if !new_ops.is_empty() {
                self.reveal(age);
            }
        }
        for (section, ids) in &replaced {
            self.unnote_blobs(*section, |id| ids.contains(id));
        }
        for (section, gone) in plan.removed {
            self.unnote_blobs(section, |id| *id == gone);
        }
        for id in plan.released {
            self.held_blobs.remove(&id);
        }
        for (section, blob) in plan.held {
            self.note_held(section, &blob);
        }
        if !new_closes.is_empty() {
            // What counts as void changed: what was dropped may be accepted now.
            self.void.clear();
        }
        for id in plan.dropped {
            if self.void.len() < VOID_IDS_MAX {
                self.void.insert(id);
            }
        }
        for (section, blob) in plan.accepted {
            // A blob that a compaction of this same batch replaces was never stored.
            let superseded = replaced
                .iter()
                .any(|(s, ids)| *s == section && ids.contains(&blob.id()));
            if !superseded {
                self.note_blob(section, &blob);
            }
            report.blobs += 1;
        }
        for (section, blob) in buffered {
            if self.pending.len() >= PENDING_BLOBS_MAX
                || self.pending_bytes + blob.len() > PENDING_BYTES_MAX
            {
                report.overflowed += 1;
                continue;
            }
            self.pending_bytes += blob.len();
            self.pending.insert(blob.id(), (section, blob));
        }
        report.buffered = self.pending.len();
        Ok(report)
    }

    /// A void blob: held for the patient on an owner device (within the bounds per author),
    /// dropped elsewhere and remembered as void.
    fn hold_or_drop(
        &self,
        owner: bool,
        section: Section,
        blob: Blob,
        batch: &mut Batch,
        plan: &mut Plan,
    ) {
        if owner && self.room_for(plan, &blob) {
            batch.hold(self.id, section, blob.id(), blob.bytes().to_vec());
            plan.held.push((section, blob));
        } else {
            plan.dropped.push(blob.id());
        }
    }

    /// Whether `blob` fits in what is held from its author, counting what this ingest holds
    /// already (`plan`): the bounds per author.
    fn room_for(&self, plan: &Plan, blob: &Blob) -> bool {
        let author = blob.header().author;
        let (count, bytes) = plan
            .held
            .iter()
            .filter(|(_, held)| held.header().author == author)
            .fold((0, 0), |(n, b), (_, held)| (n + 1, b + held.len()));
        self.room_to_hold(&author, count, bytes + blob.len())
    }

    /// New `Close` operations arrived: what this node stores or holds from the parties they
    /// name is judged again. A stored blob that is now void leaves the record (held on an owner
    /// device), but a compaction stays, restricted: what it replaced here is in it, and a reader
    /// counts the changes in it that their authors' own proofs prove (`read.rs`), so nothing an
    /// honest author wrote is lost with it, while what it replaced is taken in again from peers
    /// that still hold it; a held blob an owner accepted enters the record.
    fn rejudge(
        &self,
        store: &dyn Store,
        ledger: &Ledger,
        owner: bool,
        parties: &BTreeSet<PeerId>,
        batch: &mut Batch,
        plan: &mut Plan,
    ) -> Result<()> {
        for party in parties {
            // A node keeps what it wrote itself, void or not, and goes on offering it: an owner
            // device that receives it holds it for the patient, so an offline edit made while
            // the withdrawal was on its way is shown to the patient, not lost on its way.
            if *party == self.me {
                continue;
            }
            for (section, id) in self.blobs_by(party, &Section::ALL) {
                let Some(bytes) = store.blob(&self.id, section, &id)? else {
                    continue;
                };
                let Ok(blob) = Blob::decode(bytes) else {
                    continue;
                };
                if !consent::withdrawn(&blob, ledger) {
                    continue;
                }
                if blob.header().kind == BlobKind::Compaction {
                    // What it replaced is wanted again from peers that still hold it (nothing
                    // is lost meanwhile: the compaction stays, restricted), unless another
                    // compaction stored here, by an owner, stands for it too.
                    let others: Vec<Blob> = store
                        .blobs(&self.id, section)?
                        .into_iter()
                        .filter(|(other, _)| *other != id)
                        .filter_map(|(_, bytes)| Blob::decode(bytes).ok())
                        .filter(|other| {
                            other.header().kind == BlobKind::Compaction
                                && !consent::withdrawn(other, ledger)
                        })
                        .collect();
                    for old in &blob.header().replaces {
                        if store.replaced_by(&self.id, section, old)? != Some(id) {
                            continue;
                        }
                        match others.iter().find(|o| o.header().replaces.contains(old)) {
                            Some(other) => batch.replace(self.id, section, *old, other.id()),
                            None => plan.unreplaced.push((section, *old)),
                        }
                    }
                    // Its author's own changes in it that the owners did not pin are void
                    // here, and may be an offline edit that reached no other owner: a copy is
                    // held for the patient (within the bounds per author), who sees them in
                    // `phr held` and accepts them (a `Pin`) or discards the copy.
                    if owner
                        && !self.held_blobs.contains_key(&id)
                        && !plan.held.iter().any(|(_, held)| held.id() == id)
                        && own_changes_unpinned(&blob, ledger, self.id, section)
                        && self.room_for(plan, &blob)
                    {
                        batch.hold(self.id, section, id, blob.bytes().to_vec());
                        plan.held.push((section, blob));
                    }
                    continue;
                }
                batch.remove_blob(self.id, section, id);
                plan.removed.push((section, id));
                self.hold_or_drop(owner, section, blob, batch, plan);
            }
        }
        for (section, id, bytes) in store.held(&self.id)? {
            let Ok(blob) = Blob::decode(bytes) else {
                continue;
            };
            if !parties.contains(&blob.header().author) || consent::withdrawn(&blob, ledger) {
                continue;
            }
            batch.release(self.id, id);
            plan.released.push(id);
            if consent::check_blob(&blob, ledger, self.id, section).is_ok() {
                plan.accepted.push((section, blob));
            }
        }
        Ok(())
    }

    /// Which of the blobs a compaction lists this node may delete. Only a compaction by an
    /// owner under this node's current ledger deletes anything; a reader deletes a blob it holds
    /// only once it has checked that the compaction holds every change of it (a node that
    /// cannot read the section takes the current owner's word, as it cannot check). Blobs not
    /// held here are listed too, so they are never taken in again.
    fn verified_replaces(
        &self,
        store: &dyn Store,
        ledger: &Ledger,
        keyring: &Keyring,
        age: &AgeIdentity,
        section: Section,
        compaction: &Blob,
    ) -> Result<BTreeSet<BlobId>> {
        let header = compaction.header();
        // An owner's, or a removed device's that the owners accepted when they closed its
        // writing (they held it: it had replaced these blobs on their devices).
        let accepted = ledger
            .state()
            .closes
            .get(&header.author)
            .is_some_and(|closes| closes.iter().any(|c| c.accepted.contains(&compaction.id())));
        if !ledger.state().is_owner(&header.author) && !accepted {
            return Ok(BTreeSet::new());
        }
        let Some(key) = keyring.get(&header.key_id) else {
            return Ok(header.replaces.iter().copied().collect());
        };
        // What the compaction holds: its document's changes, and those its author saved beside
        // the document, waiting for a dependency it lacked (they wait here too once loaded).
        let Some(held) = compaction
            .open(key)
            .ok()
            .and_then(|plain| crate::changes::change_hashes(&plain).ok())
        else {
            return Ok(BTreeSet::new());
        };
        let mut verified = BTreeSet::new();
        for old in &header.replaces {
            let held_here = self
                .blobs
                .get(&section)
                .is_some_and(|b| b.contains_key(old));
            if !held_here {
                verified.insert(*old);
                continue;
            }
            let Some(plain) = self.plaintext_of(store, keyring, age, section, old)? else {
                // Not readable here (sealed to other devices): the current owner's word.
                verified.insert(*old);
                continue;
            };
            // Deleted only if the compaction holds every change of it, by hash (a hash covers a
            // change's content and its dependencies); one that cannot be read is kept.
            let contained =
                crate::changes::change_hashes(&plain).is_ok_and(|hashes| hashes.is_subset(&held));
            if contained {
                verified.insert(*old);
            }
        }
        Ok(verified)
    }

    /// The stored compactions by `parties` that a `Close` accepts.
    fn accepted_compactions(
        &self,
        store: &dyn Store,
        ledger: &Ledger,
        parties: &BTreeSet<PeerId>,
    ) -> Result<Vec<(Section, Blob)>> {
        let state = ledger.state();
        let mut out = Vec::new();
        for (section, blobs) in &self.blobs {
            for (id, stored) in blobs {
                if !parties.contains(&stored.author) {
                    continue;
                }
                let accepted = state
                    .closes
                    .get(&stored.author)
                    .is_some_and(|closes| closes.iter().any(|c| c.accepted.contains(id)));
                if !accepted {
                    continue;
                }
                let Some(bytes) = store.blob(&self.id, *section, id)? else {
                    continue;
                };
                if let Ok(blob) = Blob::decode(bytes)
                    && blob.header().kind == BlobKind::Compaction
                {
                    out.push((*section, blob));
                }
            }
        }
        Ok(out)
    }

    /// The plaintext of a stored blob, if this node can open it.
    fn plaintext_of(
        &self,
        store: &dyn Store,
        keyring: &Keyring,
        age: &AgeIdentity,
        section: Section,
        id: &BlobId,
    ) -> Result<Option<Vec<u8>>> {
        let Some(bytes) = store.blob(&self.id, section, id)? else {
            return Ok(None);
        };
        let Ok(blob) = Blob::decode(bytes) else {
            return Ok(None);
        };
        if blob.header().kind == BlobKind::SealedToOwners {
            return Ok(self.open_sealed(&blob, age).ok().flatten());
        }
        Ok(keyring
            .get(&blob.header().key_id)
            .and_then(|key| blob.open(key).ok()))
    }
}

/// What one ingest will change, gathered before the batch is committed.
#[derive(Default)]
struct Plan {
    /// Blobs entering the record.
    accepted: Vec<(Section, Blob)>,
    /// Void blobs to hold for the patient.
    held: Vec<(Section, Blob)>,
    /// Void blobs dropped (on a node that is not an owner, or past the bounds).
    dropped: Vec<BlobId>,
    /// Stored blobs leaving the record (void now).
    removed: Vec<(Section, BlobId)>,
    /// Held blobs no longer held (an owner accepted them).
    released: Vec<BlobId>,
    /// Blobs replaced by a compaction that turned void, wanted again from peers.
    unreplaced: Vec<(Section, BlobId)>,
    /// How many bytes the accepted blobs add to what is stored (what a compaction replaces
    /// taken off).
    bytes: usize,
}

/// Whether a compaction carries a proof by its own author, of changes in `section`, whose heads
/// the ledger's pins of that author do not all name: changes of its author that may be void
/// here (what the owners accepted of it is pinned by those heads).
fn own_changes_unpinned(blob: &Blob, ledger: &Ledger, record: RecordId, section: Section) -> bool {
    let author = blob.header().author;
    let state = ledger.state();
    let pinned = state.pins.get(&author).and_then(|pins| pins.get(&section));
    blob.header()
        .proofs
        .iter()
        .filter(|proof| proof.signer == author && proof.verifies(record, section))
        .any(|proof| {
            proof
                .heads
                .iter()
                .any(|head| !pinned.is_some_and(|pinned| pinned.contains(&head.0)))
        })
}
