//! Where a node's replicas keep their bytes: the [`Store`] trait, the redb [`Vault`] behind it,
//! and [`MemoryStore`] for the simulator and unit tests.
//!
//! A [`crate::replica::Replica`] reads and writes only through this trait, so the sync core runs
//! the same code on a node's disk and in the deterministic simulation. The contract is the
//! vault's: a [`Batch`] lands whole or not at all, and [`Store::commit`] returns only once it
//! would survive a crash. Everything stored is ciphertext or signed ledger operations; the store
//! judges nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{
    consent::Kept,
    keys::{BlobId, OpId, RecordId},
    section::Section,
    vault::{Batch, Change, Vault, VaultError},
};

type Result<T, E = VaultError> = std::result::Result<T, E>;

/// Durable storage of blobs and ledger operations, per record.
pub trait Store {
    /// Writes `batch` at once; returns only when it is durable (the write is acknowledged).
    fn commit(&self, batch: Batch) -> Result<()>;
    /// Every stored ledger operation of `record`, as bytes.
    fn ledger_ops(&self, record: &RecordId) -> Result<Vec<Vec<u8>>>;
    /// Every stored blob of a section, with the id it is stored under.
    fn blobs(&self, record: &RecordId, section: Section) -> Result<Vec<(BlobId, Vec<u8>)>>;
    /// One stored blob, if stored.
    fn blob(&self, record: &RecordId, section: Section, id: &BlobId) -> Result<Option<Vec<u8>>>;
    /// The compaction that last replaced this blob, if one did (so it must not be taken in
    /// again).
    fn replaced_by(
        &self,
        record: &RecordId,
        section: Section,
        id: &BlobId,
    ) -> Result<Option<BlobId>>;
    /// Whether a compaction replaced this blob.
    fn is_replaced(&self, record: &RecordId, section: Section, id: &BlobId) -> Result<bool> {
        Ok(self.replaced_by(record, section, id)?.is_some())
    }
    /// Every blob of a section a compaction replaced.
    fn replaced(&self, record: &RecordId, section: Section) -> Result<Vec<BlobId>>;
    /// Every blob held for the patient ([`Batch::hold`]), with its section.
    fn held(&self, record: &RecordId) -> Result<Vec<(Section, BlobId, Vec<u8>)>>;
    /// The records whose ledger operations are stored.
    fn records(&self) -> Result<Vec<RecordId>>;
    /// Per record, its generation: a number that moves whenever a committed batch changes what
    /// is stored of it ([`Batch::records`]; a record absent: none recorded). Equal generations
    /// mean nothing of it changed in between.
    fn generations(&self) -> Result<BTreeMap<RecordId, u64>>;
    /// The latest generation given, and the records whose generation is past `after`: what
    /// changed since a reader last looked, at a cost that follows the changes.
    fn changed_since(&self, after: u64) -> Result<(u64, Vec<RecordId>)>;
    /// Whether the store keeps what [`Batch::vouch_op`], [`Batch::vouch_blob`] and
    /// [`Batch::keep_key`] write (the vault does; by default a store ignores them, and a
    /// reader does not ask it to).
    fn vouches(&self) -> bool {
        false
    }
    /// Every stored ledger operation of `record`, each with the id it is stored under if the
    /// store vouches that this node checked it when it stored it (the vault's tags); decode
    /// with [`crate::ledger::SignedOp::decode_stored`]. By default nothing is vouched for and
    /// everything is checked again.
    fn ledger_ops_vouched(&self, record: &RecordId) -> Result<Vec<(Vec<u8>, Option<OpId>)>> {
        Ok(self
            .ledger_ops(record)?
            .into_iter()
            .map(|bytes| (bytes, None))
            .collect())
    }
    /// Every stored blob of a section with the id it is stored under and whether the store
    /// vouches for it; decode with [`crate::blob::Blob::decode_stored`]. By default nothing is
    /// vouched for.
    fn blobs_vouched(
        &self,
        record: &RecordId,
        section: Section,
    ) -> Result<Vec<(BlobId, Vec<u8>, bool)>> {
        Ok(self
            .blobs(record, section)?
            .into_iter()
            .map(|(id, bytes)| (id, bytes, false))
            .collect())
    }
    /// The section keys this node kept for `record` ([`Batch::keep_key`]), by id: each counts
    /// only where a valid `Keys` operation addressed to this node announces it. By default
    /// none are kept, and every key is unwrapped from the ledger.
    fn section_keys(&self, record: &RecordId) -> Result<Kept> {
        let _ = record;
        Ok(BTreeMap::new())
    }
}

impl Store for Vault {
    fn commit(&self, batch: Batch) -> Result<()> {
        Vault::commit(self, batch)
    }
    fn ledger_ops(&self, record: &RecordId) -> Result<Vec<Vec<u8>>> {
        Vault::ledger_ops(self, record)
    }
    fn blobs(&self, record: &RecordId, section: Section) -> Result<Vec<(BlobId, Vec<u8>)>> {
        Vault::blobs(self, record, section)
    }
    fn blob(&self, record: &RecordId, section: Section, id: &BlobId) -> Result<Option<Vec<u8>>> {
        Vault::blob(self, record, section, id)
    }
    fn replaced_by(
        &self,
        record: &RecordId,
        section: Section,
        id: &BlobId,
    ) -> Result<Option<BlobId>> {
        Vault::replaced_by(self, record, section, id)
    }
    fn replaced(&self, record: &RecordId, section: Section) -> Result<Vec<BlobId>> {
        Vault::replaced(self, record, section)
    }
    fn held(&self, record: &RecordId) -> Result<Vec<(Section, BlobId, Vec<u8>)>> {
        Vault::held(self, record)
    }
    fn records(&self) -> Result<Vec<RecordId>> {
        Vault::records(self)
    }
    fn generations(&self) -> Result<BTreeMap<RecordId, u64>> {
        Vault::generations(self)
    }
    fn changed_since(&self, after: u64) -> Result<(u64, Vec<RecordId>)> {
        Vault::changed_since(self, after)
    }
    fn vouches(&self) -> bool {
        true
    }
    fn ledger_ops_vouched(&self, record: &RecordId) -> Result<Vec<(Vec<u8>, Option<OpId>)>> {
        Vault::ledger_ops_vouched(self, record)
    }
    fn blobs_vouched(
        &self,
        record: &RecordId,
        section: Section,
    ) -> Result<Vec<(BlobId, Vec<u8>, bool)>> {
        Vault::blobs_vouched(self, record, section)
    }
    fn section_keys(&self, record: &RecordId) -> Result<Kept> {
        Vault::section_keys(self, record)
    }
}

/// A store in memory, for the simulator and tests: what a committed batch wrote survives the
/// loss of everything else a simulated node held (a crash), as a disk would.
///
/// Clones share the same contents. Local settings are ignored: nodes under simulation keep their
/// profile outside the store. Nothing here is encrypted at rest beyond what blobs and ledger
/// operations already are; it never touches a disk.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    ledger: BTreeMap<RecordId, BTreeMap<OpId, Vec<u8>>>,
    blobs: BTreeMap<(RecordId, Section), BTreeMap<BlobId, Vec<u8>>>,
    replaced: BTreeMap<(RecordId, Section, BlobId), BlobId>,
    held: BTreeMap<(RecordId, BlobId), (Section, Vec<u8>)>,
    commits: u64,
    generations: BTreeMap<RecordId, u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        // A panic while the lock was held cannot leave a half-applied batch: batches are applied
        // after every check, so the data is still whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many batches were committed: a simulated node's acknowledged writes.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// Every blob id stored for a section, for checkers.
    pub fn blob_ids(&self, record: &RecordId, section: Section) -> BTreeSet<BlobId> {
        self.lock()
            .blobs
            .get(&(*record, section))
            .map(|blobs| blobs.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Deletes a stored blob without a trace, as a disk that lost an acknowledged write would:
    /// only for tests that show the simulator notices.
    #[doc(hidden)]
    pub fn lose_blob_for_test(&self, record: &RecordId, section: Section, id: &BlobId) {
        if let Some(blobs) = self.lock().blobs.get_mut(&(*record, section)) {
            blobs.remove(id);
        }
    }
}

impl Store for MemoryStore {
    fn commit(&self, batch: Batch) -> Result<()> {
        let mut inner = self.lock();
        // Generations are the sequence of the commit, as in the vault.
        let sequence = inner.commits + 1;
        for record in batch.records() {
            inner.generations.insert(record, sequence);
        }
        let (ledger, blobs, replaced, changes) = batch.into_parts();
        for (record, id, bytes) in ledger {
            inner.ledger.entry(record).or_default().insert(id, bytes);
        }
        for (record, section, id, bytes) in blobs {
            if !inner.replaced.contains_key(&(record, section, id)) {
                inner
                    .blobs
                    .entry((record, section))
                    .or_default()
                    .insert(id, bytes);
            }
        }
        for (record, section, old, by) in replaced {
            if let Some(blobs) = inner.blobs.get_mut(&(record, section)) {
                blobs.remove(&old);
            }
            inner.replaced.insert((record, section, old), by);
        }
        for change in changes {
            match change {
                Change::RemoveBlob(record, section, id) => {
                    if let Some(blobs) = inner.blobs.get_mut(&(record, section)) {
                        blobs.remove(&id);
                    }
                }
                Change::Unreplace(record, section, id) => {
                    inner.replaced.remove(&(record, section, id));
                }
                Change::Hold(record, section, id, bytes) => {
                    inner.held.insert((record, id), (section, bytes));
                }
                Change::Release(record, id) => {
                    inner.held.remove(&(record, id));
                }
                Change::RemoveLedgerOp(record, id) => {
                    if let Some(ops) = inner.ledger.get_mut(&record) {
                        ops.remove(&id);
                    }
                }
                // A provider's decisions live in its vault alone.
                Change::Decide(..) | Change::Index(..) => {}
                // A memory store vouches for nothing and keeps no keys: everything is
                // checked again, as a peer's bytes are.
                Change::Vouch(..) | Change::KeepKey(..) => {}
                Change::ForgetRecord(record) => {
                    inner.ledger.remove(&record);
                    inner.blobs.retain(|(r, _), _| *r != record);
                    inner.replaced.retain(|(r, _, _), _| *r != record);
                    inner.held.retain(|(r, _), _| *r != record);
                }
            }
        }
        inner.commits += 1;
        Ok(())
    }

    fn ledger_ops(&self, record: &RecordId) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .lock()
            .ledger
            .get(record)
            .map(|ops| ops.values().cloned().collect())
            .unwrap_or_default())
    }

    fn blobs(&self, record: &RecordId, section: Section) -> Result<Vec<(BlobId, Vec<u8>)>> {
        Ok(self
            .lock()
            .blobs
            .get(&(*record, section))
            .map(|blobs| blobs.iter().map(|(id, b)| (*id, b.clone())).collect())
            .unwrap_or_default())
    }

    fn blob(&self, record: &RecordId, section: Section, id: &BlobId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .blobs
            .get(&(*record, section))
            .and_then(|blobs| blobs.get(id).cloned()))
    }

    fn replaced_by(
        &self,
        record: &RecordId,
        section: Section,
        id: &BlobId,
    ) -> Result<Option<BlobId>> {
        Ok(self.lock().replaced.get(&(*record, section, *id)).copied())
    }

    fn replaced(&self, record: &RecordId, section: Section) -> Result<Vec<BlobId>> {
        Ok(self
            .lock()
            .replaced
            .keys()
            .filter(|(r, s, _)| r == record && *s == section)
            .map(|(_, _, id)| *id)
            .collect())
    }

    fn held(&self, record: &RecordId) -> Result<Vec<(Section, BlobId, Vec<u8>)>> {
        Ok(self
            .lock()
            .held
            .iter()
            .filter(|((r, _), _)| r == record)
            .map(|((_, id), (section, bytes))| (*section, *id, bytes.clone()))
            .collect())
    }

    fn records(&self) -> Result<Vec<RecordId>> {
        Ok(self.lock().ledger.keys().copied().collect())
    }
    fn generations(&self) -> Result<BTreeMap<RecordId, u64>> {
        Ok(self.lock().generations.clone())
    }
    fn changed_since(&self, after: u64) -> Result<(u64, Vec<RecordId>)> {
        let inner = self.lock();
        let changed = inner
            .generations
            .iter()
            .filter(|(_, g)| **g > after)
            .map(|(id, _)| *id)
            .collect();
        Ok((inner.commits, changed))
    }
}
