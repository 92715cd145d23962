//! A replica: one record as one node holds it, and the rules for changing it.
//!
//! A replica is the record's consent ledger, the section keys this node holds under it, and the
//! ids of the sealed blobs it stores, per section. The bytes live in a [`Store`] (the node's redb
//! vault, or the simulator's memory); the replica keeps what sync needs to answer at once: which
//! ids it holds, and who may have what.
//!
//! Everything that enters a replica passes the same gate, whether it was written here, read back
//! from disk or received from a peer:
//!
//! - a ledger operation must decode, carry a good signature and belong to the record; the ledger
//!   then decides what it counts for ([`crate::ledger`]);
//! - a blob must decode (signature, layout, limits), and pass [`consent::check_blob`]: its author
//!   could write its section under the ledger state the blob names. A blob that names ledger
//!   operations not held yet waits in a bounded buffer until they arrive.
//!
//! Local writes ([`Replica::save`]) seal the record's unsaved changes, one blob per section, and
//! compact a section's blobs into one when enough have gathered. A grantee's audit entries are
//! sealed to the owner devices instead ([`Replica::seal_to_owners`]), since it holds no key of
//! `audit`. Consent changes ([`Replica::change_consent`]) sign a ledger operation and bring the
//! keys in step. [`Replica::materialise`] decrypts and applies what this node can read.

use std::collections::{BTreeMap, BTreeSet};

use automerge::ActorId;
use serde::{Deserialize, Serialize};

use crate::{
    blob::{BLOB_LEDGER_HEADS_MAX, BLOB_REPLACES_MAX, Blob, BlobError, BlobHeader, BlobKind},
    consent::{self, ConsentError, IngestError, Keyring},
    keys::{AgeIdentity, BlobId, OpId, PeerId, RecordId, SigningKey},
    ledger::{Ledger, LedgerError, OpBody, SignedOp},
    record::{Record, RecordError, RecordMeta},
    section::Section,
    store::Store,
    vault::{Batch, VaultError},
};

/// How many blobs a section accumulates before an owner device compacts them into one.
pub const BLOBS_BEFORE_COMPACTION: usize = 32;

/// A save whose changes to one section exceed this many bytes is stored as a compaction of the
/// whole section instead (an import, typically): Automerge's document encoding of a large
/// history is several times smaller than its changes.
pub const COMPACT_SAVE_BYTES_MIN: usize = 64 * 1024;

/// The most blobs a replica keeps waiting for ledger operations it does not hold yet. Past it,
/// further such blobs are dropped: a later sync fetches them again.
pub const PENDING_BLOBS_MAX: usize = 256;

/// The most bytes of blobs a replica keeps waiting for ledger operations.
pub const PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What one reconciliation is about: the record's ledger, or the blobs of one section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Topic {
    /// The consent ledger's operations.
    Ledger,
    /// The sealed blobs of one section.
    Section(Section),
}

impl Topic {
    /// The ledger, then every section.
    pub fn all() -> impl Iterator<Item = Topic> {
        std::iter::once(Topic::Ledger).chain(Section::ALL.into_iter().map(Topic::Section))
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topic::Ledger => f.write_str("ledger"),
            Topic::Section(section) => write!(f, "{section}"),
        }
    }
}

/// What can go wrong with a replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The store could not be read or written; nothing of the operation was stored.
    #[error(transparent)]
    Store(#[from] VaultError),
    /// The ledger refused an operation of ours.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Keys could not be kept in step with consent.
    #[error(transparent)]
    Consent(#[from] ConsentError),
    /// A blob could not be sealed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The record's changes could not be read.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A peer sent an item that no honest node would: nothing of what it sent with it was stored.
    #[error("refused {topic} item {item} from a peer: {reason}")]
    Refused {
        /// The topic the item was sent under.
        topic: Topic,
        /// The item's id (as sent or computed), shortened.
        item: String,
        /// Why.
        reason: String,
    },
    /// The command needs an owner device.
    #[error(
        "this device is not one of the record's owner devices, so it cannot change who may read the record"
    )]
    NotOwner,
}

type Result<T, E = ReplicaError> = std::result::Result<T, E>;

/// What [`Replica::ingest`] did with a peer's items.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Ledger operations new to this node, stored.
    pub ops: usize,
    /// Blobs new to this node, stored (buffered blobs that became storable included).
    pub blobs: usize,
    /// Items already held, or replaced by a compaction held.
    pub duplicates: usize,
    /// Blobs waiting for ledger operations this node lacks.
    pub buffered: usize,
    /// Blobs of sections this node may not hold, dropped unread.
    pub unwanted: usize,
    /// Blobs dropped because the waiting buffer was full.
    pub overflowed: usize,
}

/// One record as this node holds it. See the module documentation.
#[derive(Debug)]
pub struct Replica {
    id: RecordId,
    me: PeerId,
    ledger: Ledger,
    keyring: Keyring,
    /// Blobs stored, per section, with the author's time (the reconciliation order).
    blobs: BTreeMap<Section, BTreeMap<BlobId, u64>>,
    /// Per section, the stored blobs whose content the last materialised record holds: what a
    /// compaction may replace.
    materialised: BTreeMap<Section, Vec<BlobId>>,
    /// Blobs waiting for ledger operations, with their section.
    pending: BTreeMap<BlobId, (Section, Blob)>,
    pending_bytes: usize,
    /// Whether the store holds this record's ledger (a replica made for a stranger's session is
    /// not stored until its ledger admits this node).
    held: bool,
    problems: Vec<String>,
}

impl Replica {
    /// A record this node does not hold yet: a peer may be about to send its ledger. Nothing is
    /// stored until the ledger received admits this node.
    pub fn empty(id: RecordId, me: PeerId) -> Replica {
        Replica {
            id,
            me,
            ledger: Ledger::new(id),
            keyring: Keyring::default(),
            blobs: BTreeMap::new(),
            materialised: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            held: false,
            problems: Vec::new(),
        }
    }

    /// Reads a held record back from the store: its ledger, the keys this node holds, and the
    /// ids of its blobs. Ledger operations and blobs that fail their checks are left out and
    /// described in [`Replica::problems`]; a peer will send good copies.
    pub fn open(store: &dyn Store, id: RecordId, me: PeerId, age: &AgeIdentity) -> Result<Replica> {
        let mut replica = Replica::empty(id, me);
        for bytes in store.ledger_ops(&id)? {
            replica.held = true;
            match SignedOp::decode(&bytes).and_then(|op| replica.ledger.insert(op).map(|_| ())) {
                Ok(()) => {}
                Err(e) => replica.problems.push(format!(
                    "a stored consent-ledger operation was skipped: {e}"
                )),
            }
        }
        replica.keyring = Keyring::unlock(&replica.ledger, &me, age);
        replica.problems.extend(replica.keyring.problems.clone());
        for section in Section::ALL {
            for (stored_id, bytes) in store.blobs(&id, section)? {
                match Blob::decode(bytes) {
                    Ok(blob) if blob.id() == stored_id => {
                        replica.note_blob(section, &blob);
                    }
                    Ok(_) => replica.problems.push(skipped(
                        section,
                        stored_id,
                        "its bytes do not match its id",
                    )),
                    Err(e) => replica
                        .problems
                        .push(skipped(section, stored_id, &e.to_string())),
                }
            }
        }
        Ok(replica)
    }

    /// The record's id.
    pub fn id(&self) -> RecordId {
        self.id
    }

    /// The node this replica belongs to.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The consent ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The section keys this node holds.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Whether the store holds this record.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Problems met reading the record back (damaged or unusable items skipped).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The ids of the blobs stored for a section.
    pub fn blob_ids(&self, section: Section) -> impl Iterator<Item = BlobId> + '_ {
        self.blobs
            .get(&section)
            .into_iter()
            .flat_map(|blobs| blobs.keys().copied())
    }

    /// Whether `peer` may hold `section` of this record at `now_ms`: owner devices hold every
    /// section, grantees what they may read, relays every section as ciphertext.
    pub fn may_hold(&self, peer: &PeerId, section: Section, now_ms: i64) -> bool {
        may_hold(&self.ledger, peer, section, now_ms)
    }

    /// Whether the record may be offered to `peer` at all (its ledger, and what it may hold).
    pub fn admits(&self, peer: &PeerId, now_ms: i64) -> bool {
        self.ledger.state().admitted(peer, now_ms)
    }

    /// Whether `peer` may be sent items of `topic`.
    pub fn may_send(&self, peer: &PeerId, topic: Topic, now_ms: i64) -> bool {
        match topic {
            Topic::Ledger => self.admits(peer, now_ms),
            Topic::Section(section) => self.may_hold(peer, section, now_ms),
        }
    }

    /// The items of a topic as reconciliation sees them: (time, id), the author's clock first so
    /// that recent differences sit together at the end of the range.
    pub fn reconcile_items(&self, topic: Topic) -> Vec<(u64, [u8; 32])> {
        match topic {
            Topic::Ledger => self
                .ledger
                .ops()
                .map(|op| (time_key(op.op().time_ms), op.id().0))
                .collect(),
            Topic::Section(section) => self
                .blobs
                .get(&section)
                .map(|blobs| blobs.iter().map(|(id, time)| (*time, id.0)).collect())
                .unwrap_or_default(),
        }
    }

    /// Whether this node holds the item (or, for a blob, holds what replaced it).
    pub fn has(&self, store: &dyn Store, topic: Topic, id: &[u8; 32]) -> Result<bool> {
        Ok(match topic {
            Topic::Ledger => self.ledger.contains(&OpId(*id)),
            Topic::Section(section) => {
                let id = BlobId(*id);
                self.blobs
                    .get(&section)
                    .is_some_and(|b| b.contains_key(&id))
                    || store.is_replaced(&self.id, section, &id)?
            }
        })
    }

    /// An item's bytes, if held.
    pub fn item(&self, store: &dyn Store, topic: Topic, id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(match topic {
            Topic::Ledger => self.ledger.get(&OpId(*id)).map(|op| op.bytes().to_vec()),
            Topic::Section(section) => {
                let id = BlobId(*id);
                if !self
                    .blobs
                    .get(&section)
                    .is_some_and(|b| b.contains_key(&id))
                {
                    return Ok(None);
                }
                store.blob(&self.id, section, &id)?
            }
        })
    }

    fn note_blob(&mut self, section: Section, blob: &Blob) {
        self.blobs
            .entry(section)
            .or_default()
            .insert(blob.id(), time_key(blob.header().time_ms));
    }

    /// Takes items a peer sent: ledger operations first (blobs are judged by them), then blobs.
    /// Everything is checked before anything is stored; one item no honest node would send
    /// refuses the whole lot ([`ReplicaError::Refused`]) and stores nothing. Blobs of sections
    /// this node may not hold are dropped; blobs naming ledger operations it lacks wait in a
    /// bounded buffer. What is stored is committed in one durable batch.
    pub fn ingest(
        &mut self,
        store: &dyn Store,
        age: &AgeIdentity,
        items: Vec<(Topic, Vec<u8>)>,
        now_ms: i64,
    ) -> Result<Ingested> {
        let mut report = Ingested::default();
        let mut ledger = self.ledger.clone();
        let mut new_ops = Vec::new();
        let mut blobs = Vec::new();
        for (topic, bytes) in items {
            match topic {
                Topic::Ledger => {
                    let op = SignedOp::decode(&bytes).map_err(|e| refused(topic, "?", e))?;
                    let id = op.id();
                    match ledger.insert(op.clone()) {
                        Ok(true) => new_ops.push(op),
                        Ok(false) => report.duplicates += 1,
                        Err(e) => return Err(refused(topic, &id.short(), e)),
                    }
                }
                Topic::Section(section) => {
                    let blob = Blob::decode(bytes).map_err(|e| refused(topic, "?", e))?;
                    blobs.push((section, blob));
                }
            }
        }
        // A record not held yet is taken in only if its ledger admits this node.
        let keep_ops = self.held || ledger.state().admitted(&self.me, now_ms);

        // Judge the blobs under the ledger as it will be, the buffered ones too.
        let mut batch = Batch::new().from_peer();
        let mut accepted: Vec<(Section, Blob)> = Vec::new();
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
                || store.is_replaced(&self.id, section, &id)?;
            if held {
                report.duplicates += usize::from(theirs);
                continue;
            }
            if !keep_ops || !may_hold(&ledger, &self.me, section, now_ms) {
                report.unwanted += 1;
                continue;
            }
            match consent::check_blob(&blob, &ledger, self.id, section) {
                Ok(()) => {
                    accepted_ids.insert(id);
                    accepted.push((section, blob));
                }
                Err(IngestError::UnknownLedgerHeads(_)) => buffered.push((section, blob)),
                Err(e) if theirs => return Err(refused(topic, &id.short(), e)),
                // A buffered blob that the ledger now refuses was never stored: drop it.
                Err(_) => {}
            }
        }

        if keep_ops && !self.held {
            // The ledger now admits this node: store all of it, also what came in earlier
            // messages and was kept in memory only.
            for op in ledger.ops() {
                batch.ledger_op(self.id, op.id(), op.bytes());
            }
        } else if keep_ops {
            for op in &new_ops {
                batch.ledger_op(self.id, op.id(), op.bytes());
            }
        }
        for (section, blob) in &accepted {
            if blob.header().kind == BlobKind::Compaction {
                for old in &blob.header().replaces {
                    batch.replace(self.id, *section, *old, blob.id());
                }
            }
            batch.blob(self.id, *section, blob.id(), blob.bytes().to_vec());
        }
        if !batch.is_empty() {
            store.commit(batch)?;
        }

        // The batch is durable: now change what is in memory.
        let new_keys = new_ops
            .iter()
            .any(|op| matches!(op.op().body, OpBody::Keys { .. }));
        report.ops = new_ops.len();
        // A ledger that does not admit this node yet stays in memory only (bounded by
        // `LEDGER_OPS_MAX`): the rest of it may come in the next message.
        self.ledger = ledger;
        if keep_ops {
            self.held = true;
            if new_keys {
                self.keyring = Keyring::unlock(&self.ledger, &self.me, age);
            }
        }
        for (section, blob) in accepted {
            if blob.header().kind == BlobKind::Compaction {
                let replaced: BTreeSet<BlobId> = blob.header().replaces.iter().copied().collect();
                if let Some(ids) = self.blobs.get_mut(&section) {
                    ids.retain(|id, _| !replaced.contains(id));
                }
                if let Some(ids) = self.materialised.get_mut(&section) {
                    ids.retain(|id| !replaced.contains(id));
                }
            }
            self.note_blob(section, &blob);
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
        let mut parts: BTreeMap<Section, Vec<Vec<u8>>> = BTreeMap::new();
        let mut ids: BTreeMap<Section, Vec<BlobId>> = BTreeMap::new();
        for &section in sections {
            for (stored_id, bytes) in store.blobs(&self.id, section)? {
                match self.open_stored(section, stored_id, bytes, age) {
                    Ok(Some(plain)) => {
                        parts.entry(section).or_default().push(plain);
                        ids.entry(section).or_default().push(stored_id);
                    }
                    // Sealed for others (another provider's audit entries, say): not ours to read.
                    Ok(None) => {}
                    Err(problem) => warnings.push(problem),
                }
            }
        }
        let (record, mut bad) = Record::load_parts(meta, &parts, actor);
        // Remove from the last index down, so earlier indices stay right.
        bad.sort_by_key(|(section, index, _)| std::cmp::Reverse((*section, *index)));
        for (section, index, error) in bad {
            let id = ids
                .get_mut(&section)
                .expect("a bad piece belongs to a loaded section")
                .remove(index);
            warnings.push(skipped(section, id, &error.to_string()));
        }
        for &section in sections {
            self.materialised
                .insert(section, ids.remove(&section).unwrap_or_default());
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
    ) -> Result<Option<Vec<u8>>, String> {
        let fail = |reason: String| skipped(section, stored_id, &reason);
        let blob = Blob::decode(bytes).map_err(|e| fail(e.to_string()))?;
        if blob.id() != stored_id {
            return Err(fail("its bytes do not match its id".into()));
        }
        // The same check a blob from a peer passes: its author could write here under the
        // consent it names.
        consent::check_blob(&blob, &self.ledger, self.id, section)
            .map_err(|e| fail(e.to_string()))?;
        let header = blob.header();
        if header.kind == BlobKind::SealedToOwners {
            return self.open_sealed(&blob, age).map_err(fail);
        }
        let Some(key) = self.keyring.get(&header.key_id) else {
            if self.ledger.state().can_read(&self.me, section, i64::MAX) {
                return Err(fail("this node holds no key for it".into()));
            }
            return Ok(None);
        };
        let plain = blob.open(key).map_err(|e| fail(e.to_string()))?;
        if header.kind == BlobKind::Changes {
            crate::changes::check_authorship(&header.author, &plain).map_err(fail)?;
        }
        Ok(Some(plain))
    }

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
            batch.blob(
                self.id,
                blob.header().section,
                blob.id(),
                blob.bytes().to_vec(),
            );
        }
        for op in consent::repair(&mut self.ledger, &mut self.keyring, device, now_ms)? {
            batch.ledger_op(self.id, op.id(), op.bytes());
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
            let blob = self.seal(
                device,
                section,
                BlobKind::Changes,
                &bytes,
                Vec::new(),
                now_ms,
            )?;
            // A blob every peer would refuse (a grantee writing outside its grant) is never
            // stored here either.
            consent::check_blob(&blob, &self.ledger, self.id, section)
                .map_err(ConsentError::from)?;
            written.push(blob.id());
            batch.blob(self.id, section, blob.id(), blob.bytes().to_vec());
            blobs.push((section, blob));
        }
        store.commit(batch)?;
        self.held = true;
        for (section, blob) in blobs {
            self.materialised
                .entry(section)
                .or_default()
                .push(blob.id());
            self.note_blob(section, &blob);
        }
        for blob in &sealed {
            self.note_blob(blob.header().section, blob);
        }
        if owner {
            compact.extend(
                self.materialised
                    .iter()
                    .filter(|(_, ids)| ids.len() > BLOBS_BEFORE_COMPACTION)
                    .map(|(section, _)| *section),
            );
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
        replaces.extend(self.materialised.get(&section).into_iter().flatten());
        let replaces: Vec<BlobId> = replaces.into_iter().take(BLOB_REPLACES_MAX).collect();
        let bytes = record.save_section(section);
        let blob = self.seal(
            device,
            section,
            BlobKind::Compaction,
            &bytes,
            replaces.clone(),
            now_ms,
        )?;
        let mut batch = Batch::new();
        for old in &replaces {
            batch.replace(self.id, section, *old, blob.id());
        }
        batch.blob(self.id, section, blob.id(), blob.bytes().to_vec());
        store.commit(batch)?;
        if let Some(ids) = self.blobs.get_mut(&section) {
            ids.retain(|id, _| !replaces.contains(id));
        }
        self.note_blob(section, &blob);
        self.materialised.insert(section, vec![blob.id()]);
        Ok(blob.id())
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
            let mut appended = vec![ledger.append(signer, body, now_ms)?];
            appended.extend(consent::repair(&mut ledger, &mut keyring, device, now_ms)?);
            Ok(appended)
        })();
        self.keyring = keyring;
        let appended = appended?;
        let mut batch = Batch::new();
        for op in &appended {
            batch.ledger_op(self.id, op.id(), op.bytes());
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
        kind: BlobKind,
        plaintext: &[u8],
        replaces: Vec<BlobId>,
        now_ms: i64,
    ) -> Result<Blob> {
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
        };
        Ok(Blob::seal(header, key, plaintext, device)?)
    }
}

/// Whether `peer` may hold `section` under `ledger` (see [`Replica::may_hold`]).
fn may_hold(ledger: &Ledger, peer: &PeerId, section: Section, now_ms: i64) -> bool {
    let state = ledger.state();
    state.can_read(peer, section, now_ms) || state.is_relay(peer, now_ms)
}

/// A ledger or blob time as a reconciliation timestamp (times before 1970 sort first).
fn time_key(time_ms: i64) -> u64 {
    u64::try_from(time_ms).unwrap_or(0)
}

fn refused(topic: Topic, item: &str, reason: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Refused {
        topic,
        item: item.to_string(),
        reason: reason.to_string(),
    }
}

fn skipped(section: Section, id: BlobId, reason: &str) -> String {
    format!(
        "blob {} of the {section} section was skipped: {reason}; the rest of the record loaded, \
         and a good copy will be fetched from a peer when this node syncs",
        id.short()
    )
}

mod sealed;
#[cfg(test)]
mod tests;
