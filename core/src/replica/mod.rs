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
//! - a blob must decode (signature, layout, limits), and pass [`crate::consent::check_blob`]: its author
//!   could write its section under the ledger state the blob names. A blob that names ledger
//!   operations not held yet waits in a bounded buffer until they arrive.
//!
//! Local writes ([`Replica::save`]) seal the record's unsaved changes, one blob per section, and
//! compact a section's blobs into one when enough have gathered. A grantee's audit entries are
//! sealed to the owner devices instead ([`Replica::seal_to_owners`]), since it holds no key of
//! `audit`. Consent changes ([`Replica::change_consent`]) sign a ledger operation and bring the
//! keys in step. [`Replica::materialise`] decrypts and applies what this node can read.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    blob::{AuthorshipProof, Blob, BlobError},
    consent::{ConsentError, Keyring},
    keys::{AgeIdentity, BlobId, OpId, PeerId, RecordId},
    ledger::{Ledger, LedgerError, OpBody, RevokeTarget, SignedOp},
    record::RecordError,
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

/// An owner device compacts a section once the bytes of its changes blobs pass half the bytes
/// of its compactions and this floor: what a section stores stays within about 1.5 times its
/// document, for small records as for large, without compacting at every small write.
pub const COMPACT_CHANGES_BYTES_MIN: usize = 4 * 1024;

/// The fewest changes blobs a run compaction replaces ([`Replica::form_run`]): one blob is
/// sent as it is.
pub const RUN_BLOBS_MIN: usize = 2;

/// The most changes blobs one run compaction replaces.
pub const RUN_BLOBS_MAX: usize = 1024;

/// The most bytes of changes one run compaction holds before packing: runs are for small
/// changes (readings, notes, messages); a larger write is compacted with its section.
pub const RUN_PLAINTEXT_BYTES_MAX: usize = 1024 * 1024;

/// The most blobs a replica keeps waiting for ledger operations it does not hold yet. Past it,
/// further such blobs are dropped: a later sync fetches them again.
pub const PENDING_BLOBS_MAX: usize = 256;

/// The most bytes of blobs a replica keeps waiting for ledger operations.
pub const PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The most blobs an owner device holds for the patient from one author whose access ended
/// (written after it, or concurrently with it). Past it, further ones are dropped: a party that
/// keeps writing after its access ended is not owed more room.
pub const HELD_BLOBS_PER_AUTHOR_MAX: usize = 32;

/// The most bytes of held blobs an owner device keeps from one author.
pub const HELD_BYTES_PER_AUTHOR_MAX: usize = 4 * 1024 * 1024;

/// The most ids of void blobs a non-owner node remembers having dropped, so that it does not
/// fetch them again in every sync.
pub const VOID_IDS_MAX: usize = 4096;

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
    /// A write every reader would refuse to load, so it was not saved.
    #[error("this write was not saved, because every reader would refuse it: {0}")]
    Unreadable(String),
    /// No blob with this id is held for the patient.
    #[error("no held entry {0}; the list of held entries shows their ids")]
    NotHeld(String),
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
    /// Blobs by a party whose access ended before them: held for the patient on an owner
    /// device, dropped elsewhere.
    pub void: usize,
    /// Ledger operations not kept: they can never count, or the ledger is full
    /// ([`Ledger::admit`]).
    pub dropped_ops: usize,
    /// Blobs not stored because they would take the record past this node's quota for it
    /// ([`Replica::set_quota`]); a later sync offers them again.
    pub over_quota: usize,
}

/// A stored blob as the replica keeps it in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    /// The author's time, as reconciliation orders it.
    time: u64,
    /// Who signed it.
    author: PeerId,
    /// Its size in bytes.
    bytes: usize,
    /// Whether it is a compaction (a section's document) rather than changes.
    compaction: bool,
}

/// A blob held for the patient: by a party whose access ended before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBlob {
    /// Its id.
    pub id: BlobId,
    /// The section it would change.
    pub section: Section,
    /// Who signed it.
    pub author: PeerId,
    /// When, as its author says.
    pub time_ms: i64,
    /// Its size in bytes.
    pub bytes: usize,
}

/// One record as this node holds it. See the module documentation.
#[derive(Debug)]
pub struct Replica {
    id: RecordId,
    me: PeerId,
    ledger: Ledger,
    keyring: Keyring,
    /// Blobs stored, per section, with the author's time (the reconciliation order), the
    /// author and the size.
    blobs: BTreeMap<Section, BTreeMap<BlobId, Stored>>,
    /// The bytes of the blobs stored.
    stored_bytes: usize,
    /// The most bytes of blobs this node stores for the record ([`Replica::set_quota`]).
    quota: usize,
    /// Blobs held for the patient (on an owner device): see [`HeldBlob`].
    held_blobs: BTreeMap<BlobId, HeldBlob>,
    /// Void blobs this node dropped (not an owner), so they are not fetched again.
    void: BTreeSet<BlobId>,
    /// Stored blobs the last materialise could not read, with why.
    unreadable: Vec<(Section, BlobId, String)>,
    /// Per section, the stored blobs whose content the last materialised record holds: what a
    /// compaction may replace.
    materialised: BTreeMap<Section, Vec<BlobId>>,
    /// Per section, the verified authorship proofs of the materialised blobs: what a
    /// compaction of the section carries (`changes::provenance`).
    proofs: BTreeMap<Section, Vec<AuthorshipProof>>,
    /// Blobs waiting for ledger operations, with their section.
    pending: BTreeMap<BlobId, (Section, Blob)>,
    pending_bytes: usize,
    /// Whether the store holds this record's ledger (a replica made for a stranger's session is
    /// not stored until its ledger admits this node).
    held: bool,
    /// Whether this node takes the record in once its ledger admits it (see [`Welcome`]).
    welcome: bool,
    problems: Vec<String>,
}

/// Which records a node takes in when a peer sends one it does not hold and whose ledger
/// admits it. A patient's device takes only the record it joined (`phr init --device --join`),
/// so a stranger who lists the device as an owner of a record of their own cannot make it
/// adopt that record; providers and relays take what is shared with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Welcome {
    /// Any record whose ledger admits this node.
    Any,
    /// This record only.
    Only(RecordId),
    /// None (a patient device made before joining existed, which names no record).
    Nothing,
}

impl Welcome {
    /// Whether `record` is taken in.
    pub fn takes(self, record: RecordId) -> bool {
        match self {
            Welcome::Any => true,
            Welcome::Only(only) => only == record,
            Welcome::Nothing => false,
        }
    }
}

/// The most records a provider's node holds that a person has not accepted yet (`phr patients
/// --pending`). Past it, no new record is taken in until one is accepted or declined: anyone can
/// make a record that grants a provider, so what strangers can make it hold is bounded.
pub const PENDING_RECORDS_MAX: usize = 32;

/// The most bytes of blobs a provider's node stores of a record not accepted yet: enough for the
/// summary a person needs to decide, not for a flood.
pub const PENDING_RECORD_BYTES_MAX: usize = 1024 * 1024;

/// The most bytes of blobs a provider's node or a relay stores of one record it holds for
/// others (accepted, or relayed). A patient's own devices store their record without bound.
pub const RECORD_BYTES_MAX: usize = 512 * 1024 * 1024;

/// How a node takes in records it does not hold, and how many bytes of each it stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intake {
    /// Which records not held it takes in.
    pub welcome: Welcome,
    /// Whether a record taken in waits for a person to accept it (a provider's new patients):
    /// until then it stores at most [`PENDING_RECORD_BYTES_MAX`], and at most
    /// [`PENDING_RECORDS_MAX`] records wait at once.
    pub acceptance: bool,
    /// The records a person accepted (with `acceptance`; ignored otherwise).
    pub accepted: BTreeSet<RecordId>,
    /// Records a person declined: never taken in again, unless accepted after all.
    pub declined: BTreeSet<RecordId>,
    /// The most bytes stored of a record held and not waiting.
    pub quota: usize,
}

impl Default for Intake {
    /// Every record, nothing to accept, no quota: a patient's first device, and the simulator.
    fn default() -> Intake {
        Intake {
            welcome: Welcome::Any,
            acceptance: false,
            accepted: BTreeSet::new(),
            declined: BTreeSet::new(),
            quota: usize::MAX,
        }
    }
}

impl Intake {
    /// Whether `record`, held, waits for a person to accept it.
    pub fn is_pending(&self, record: &RecordId) -> bool {
        self.acceptance && !self.accepted.contains(record)
    }

    /// The quota of a record held.
    pub fn quota_of(&self, record: &RecordId) -> usize {
        if self.is_pending(record) {
            PENDING_RECORD_BYTES_MAX.min(self.quota)
        } else {
            self.quota
        }
    }

    /// Whether a record not held is taken in once its ledger admits this node, `pending` being
    /// how many held records wait for acceptance now.
    pub fn takes(&self, record: RecordId, pending: usize) -> bool {
        self.welcome.takes(record)
            && !self.declined.contains(&record)
            && (!self.is_pending(&record) || pending < PENDING_RECORDS_MAX)
    }

    /// A replica for a record not held, taken in only as [`Intake::takes`] says, with its quota.
    pub fn stranger(&self, record: RecordId, me: PeerId, pending: usize) -> Replica {
        let mut replica = Replica::empty(record, me);
        self.judge_stranger(&mut replica, pending);
        replica
    }

    /// Decides again whether a stranger's replica (not held) is taken in, `pending` records
    /// waiting now: others may have been taken in since it was made.
    pub(crate) fn judge_stranger(&self, replica: &mut Replica, pending: usize) {
        if !replica.held {
            replica.welcome = self.takes(replica.id, pending);
            replica.quota = self.quota_of(&replica.id);
        }
    }

    /// `record` as this node holds it, with its quota, or a stranger's replica if it is not
    /// held.
    pub fn open(
        &self,
        store: &dyn Store,
        record: RecordId,
        me: PeerId,
        age: &AgeIdentity,
        pending: usize,
    ) -> Result<Replica> {
        let mut replica = Replica::open(store, record, me, age)?;
        if !replica.is_held() {
            return Ok(self.stranger(record, me, pending));
        }
        replica.quota = self.quota_of(&record);
        Ok(replica)
    }
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
            stored_bytes: 0,
            quota: usize::MAX,
            materialised: BTreeMap::new(),
            proofs: BTreeMap::new(),
            held_blobs: BTreeMap::new(),
            void: BTreeSet::new(),
            unreadable: Vec::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            held: false,
            welcome: true,
            problems: Vec::new(),
        }
    }

    /// A record this node does not hold, taken in only if `welcome` takes it.
    pub fn stranger(id: RecordId, me: PeerId, welcome: Welcome) -> Replica {
        Intake {
            welcome,
            ..Intake::default()
        }
        .stranger(id, me, 0)
    }

    /// Reads a held record back from the store: its ledger, the keys this node holds, and the
    /// ids of its blobs. Ledger operations and blobs that fail their checks are left out and
    /// described in [`Replica::problems`]; a peer will send good copies.
    pub fn open(store: &dyn Store, id: RecordId, me: PeerId, age: &AgeIdentity) -> Result<Replica> {
        let mut replica = Replica::empty(id, me);
        let mut ops = Vec::new();
        // What the store did not vouch for and was checked now: vouched for once opened.
        let mut checked_now = Vec::new();
        for (bytes, vouched) in store.ledger_ops_vouched(&id)? {
            replica.held = true;
            match SignedOp::decode_stored(&bytes, vouched) {
                Ok(op) if op.op().record == id => {
                    if vouched != Some(op.id()) {
                        checked_now.push(op.id());
                    }
                    ops.push(op);
                }
                Ok(op) => replica.problems.push(format!(
                    "a stored consent-ledger operation of another record ({}) was skipped",
                    op.op().record
                )),
                Err(e) => replica.problems.push(format!(
                    "a stored consent-ledger operation was skipped: {e}"
                )),
            }
        }
        // A store written before `Ledger::admit` kept junk from peers: it is deleted now.
        let stored: Vec<OpId> = ops.iter().map(SignedOp::id).collect();
        replica.ledger.admit(ops)?;
        let mut batch = Batch::new();
        for op in stored.iter().filter(|op| !replica.ledger.contains(op)) {
            batch.remove_ledger_op(id, *op);
        }
        if !batch.is_empty() {
            store.commit(batch)?;
        }
        let vouches = store.vouches();
        // Vouching and keeping keys change nothing of the record: a batch of its own, after.
        let mut vouch = Batch::new();
        if vouches {
            for op in checked_now.iter().filter_map(|op| replica.ledger.get(op)) {
                vouch.vouch_op(id, op);
            }
        }
        let kept = store.section_keys(&id)?;
        replica.keyring = Keyring::unlock_kept(&replica.ledger, &me, age, &kept);
        if vouches {
            for (section, epoch, key) in replica.keyring.not_in(&kept) {
                vouch.keep_key(id, section, epoch, key);
            }
        }
        replica.problems.extend(replica.keyring.problems.clone());
        replica.reveal(age);
        for section in Section::ALL {
            for (stored_id, bytes, vouched) in store.blobs_vouched(&id, section)? {
                match Blob::decode_stored(bytes, vouched.then_some(stored_id)) {
                    Ok(blob) if blob.id() == stored_id => {
                        if vouches && !vouched {
                            vouch.vouch_blob(id, section, &blob);
                        }
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
        for (section, stored_id, bytes) in store.held(&id)? {
            match Blob::decode(bytes) {
                Ok(blob) if blob.id() == stored_id => replica.note_held(section, &blob),
                _ => replica.problems.push(format!(
                    "held blob {} is damaged and was skipped; discard it with `phr held discard`",
                    stored_id.short()
                )),
            }
        }
        // Only a speed-up for the next opening: a store that cannot write now (a full disk)
        // loses nothing, and the record is read all the same.
        if !vouch.is_empty() {
            let _ = store.commit(vouch);
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

    /// Opens the sealed details of the ledger's parties that this node may read: all of them
    /// on an owner device (under the `audit` keys it holds), its own grant on a grantee
    /// (`ledger::sealed`). A damaged copy is noted in [`Replica::problems`].
    pub fn reveal(&mut self, age: &AgeIdentity) {
        let keyring = &self.keyring;
        let problems = self.ledger.reveal(|id| keyring.get(id), age, &self.me);
        self.problems.extend(problems);
    }

    /// Puts a key this node made into its keyring before the ledger announces it (a new
    /// record's first `audit` key, which its `Create` is sealed under).
    pub fn hold_key(&mut self, section: Section, epoch: u32, key: crate::keys::SectionKey) {
        self.keyring.insert(section, epoch, key);
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

    /// Whether `peer` may be sent items of `topic`: the ledger goes to every admitted peer, and
    /// in part to a withdrawn party ([`Replica::withdrawn_share`]); sections to whoever may hold
    /// them.
    pub fn may_send(&self, peer: &PeerId, topic: Topic, now_ms: i64) -> bool {
        match topic {
            Topic::Ledger => self.admits(peer, now_ms) || self.is_withdrawn(peer),
            Topic::Section(section) => self.may_hold(peer, section, now_ms),
        }
    }

    /// Whether the owners withdrew `peer`'s access: revoked a grant to it, removed it as a
    /// device, or closed its writing ([`Replica::withdrawal`], without walking the ledger).
    pub fn is_withdrawn(&self, peer: &PeerId) -> bool {
        let state = self.ledger.state();
        state.removed_devices.contains(peer)
            || state.closes.contains_key(peer)
            || state
                .revoked
                .iter()
                .any(|grant| grant.grantee.peer == *peer)
    }

    /// The ledger operations a peer that is not admitted may be sent: those that withdrew its
    /// access, the pins of what the owners accepted from it, and everything before them (their
    /// causal past), so that its node learns that its access ended and says so (`phr
    /// patients`). Never data, and nothing the owners wrote after the withdrawal but what it
    /// depends on. Empty for anyone never admitted.
    pub fn withdrawn_share(&self, peer: &PeerId) -> BTreeSet<OpId> {
        let mut share = BTreeSet::new();
        let pins = self.ledger.ops().filter(|op| {
            matches!(&op.op().body, OpBody::Pin { party, .. } if party == peer)
                && self.ledger.state().valid.contains(&op.id())
        });
        let mut next: Vec<OpId> = self
            .withdrawal(peer)
            .into_iter()
            .chain(pins)
            .map(|op| op.id())
            .collect();
        while let Some(id) = next.pop() {
            if let Some(op) = self.ledger.get(&id)
                && share.insert(id)
            {
                next.extend(op.op().parents.iter().copied());
            }
        }
        share
    }

    /// The items of `topic` to offer `peer` in reconciliation at `now_ms`: everything it may be
    /// sent, or nothing. An admitted peer is offered every valid ledger operation; a withdrawn
    /// party only its [`Replica::withdrawn_share`].
    pub fn offer(&self, peer: &PeerId, topic: Topic, now_ms: i64) -> Vec<(u64, [u8; 32])> {
        if !self.may_send(peer, topic, now_ms) {
            return Vec::new();
        }
        let items = self.reconcile_items(topic);
        if topic != Topic::Ledger || self.admits(peer, now_ms) {
            return items;
        }
        let share = self.withdrawn_share(peer);
        items
            .into_iter()
            .filter(|(_, id)| share.contains(&OpId(*id)))
            .collect()
    }

    /// Whether the item `id` of `topic` may be sent to `peer` at `now_ms`, where `share` is the
    /// ledger share of a peer not admitted, worked out once by the caller (`None`: not yet).
    pub fn may_send_item(
        &self,
        peer: &PeerId,
        topic: Topic,
        id: &[u8; 32],
        share: &mut Option<BTreeSet<OpId>>,
        now_ms: i64,
    ) -> bool {
        if !self.may_send(peer, topic, now_ms) {
            return false;
        }
        if topic != Topic::Ledger || self.admits(peer, now_ms) {
            return true;
        }
        share
            .get_or_insert_with(|| self.withdrawn_share(peer))
            .contains(&OpId(*id))
    }

    /// The valid operations that ended `peer`'s access: its revocations, its removal, the closes
    /// of its writing. Empty for a party never withdrawn.
    pub fn withdrawal(&self, peer: &PeerId) -> Vec<&SignedOp> {
        let state = self.ledger.state();
        let granted_to = |id: &OpId| {
            state
                .revoked
                .iter()
                .chain(&state.grants)
                .any(|grant| grant.id == *id && grant.grantee.peer == *peer)
        };
        self.ledger
            .ops()
            .filter(|op| state.valid.contains(&op.id()))
            .filter(|op| match &op.op().body {
                OpBody::Close { party, .. } => party == peer,
                OpBody::Revoke {
                    target: RevokeTarget::Party(party),
                } => party == peer,
                OpBody::Revoke {
                    target: RevokeTarget::Grant(grant),
                } => granted_to(grant),
                OpBody::RemoveDevice { device } => device == peer,
                _ => false,
            })
            .collect()
    }

    /// The items of a topic as reconciliation sees them: (time, id), the author's clock first so
    /// that recent differences sit together at the end of the range. Of the ledger, only the
    /// valid operations: one still waiting for its parents is not passed on, so what a node
    /// offers is what counts.
    pub fn reconcile_items(&self, topic: Topic) -> Vec<(u64, [u8; 32])> {
        match topic {
            Topic::Ledger => {
                let valid = &self.ledger.state().valid;
                self.ledger
                    .ops()
                    .filter(|op| valid.contains(&op.id()))
                    .map(|op| (time_key(op.op().time_ms), op.id().0))
                    .collect()
            }
            Topic::Section(section) => self
                .blobs
                .get(&section)
                .map(|blobs| {
                    blobs
                        .iter()
                        .map(|(id, stored)| (stored.time, id.0))
                        .collect()
                })
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
                    || self.held_blobs.contains_key(&id)
                    || self.void.contains(&id)
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

    /// Whether an owner device should compact `section` now: more than
    /// [`BLOBS_BEFORE_COMPACTION`] blobs materialised, or changes blobs of more than half the
    /// bytes of its compactions and more than [`COMPACT_CHANGES_BYTES_MIN`].
    pub(crate) fn wants_compaction(&self, section: Section) -> bool {
        let (Some(ids), Some(stored)) = (self.materialised.get(&section), self.blobs.get(&section))
        else {
            return false;
        };
        if ids.len() > BLOBS_BEFORE_COMPACTION {
            return true;
        }
        // Only what a compaction would replace counts: the blobs the record holds.
        let (compacted, changes) =
            ids.iter()
                .filter_map(|id| stored.get(id))
                .fold((0, 0), |(c, x), s| {
                    if s.compaction {
                        (c + s.bytes, x)
                    } else {
                        (c, x + s.bytes)
                    }
                });
        changes > COMPACT_CHANGES_BYTES_MIN && changes > compacted / 2
    }

    fn note_blob(&mut self, section: Section, blob: &Blob) {
        let stored = Stored {
            time: time_key(blob.header().time_ms),
            author: blob.header().author,
            bytes: blob.len(),
            compaction: blob.header().kind == crate::blob::BlobKind::Compaction,
        };
        if let Some(before) = self
            .blobs
            .entry(section)
            .or_default()
            .insert(blob.id(), stored)
        {
            self.stored_bytes -= before.bytes;
        }
        self.stored_bytes += stored.bytes;
    }

    /// Forgets blobs of `section` a test removed from the store behind the replica's back:
    /// only for the simulator's planted bugs.
    #[doc(hidden)]
    pub fn forget_blobs_for_test(&mut self, section: Section, ids: &BTreeSet<BlobId>) {
        self.unnote_blobs(section, |id| ids.contains(id));
    }

    /// Forgets stored blobs of `section` that are no longer stored (replaced or removed), and
    /// the materialised view's claim on them.
    fn unnote_blobs(&mut self, section: Section, gone: impl Fn(&BlobId) -> bool) {
        if let Some(stored) = self.blobs.get_mut(&section) {
            let mut freed = 0;
            stored.retain(|id, blob| {
                let keep = !gone(id);
                if !keep {
                    freed += blob.bytes;
                }
                keep
            });
            self.stored_bytes -= freed;
        }
        if let Some(materialised) = self.materialised.get_mut(&section) {
            materialised.retain(|id| !gone(id));
        }
    }

    /// Sets the most bytes of blobs this node stores for the record: past it, what a peer sends
    /// is not stored ([`Ingested::over_quota`]) until room is made or the quota raised. What is
    /// stored already stays. No bound by default.
    pub fn set_quota(&mut self, bytes: usize) {
        self.quota = bytes;
    }

    /// The bytes of the blobs stored for the record.
    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes
    }

    /// This node's quota for the record, in bytes ([`Replica::set_quota`]).
    pub fn quota(&self) -> usize {
        self.quota
    }

    /// The bytes stored of the blobs among `ids` of `section`.
    fn bytes_of(&self, section: Section, ids: &[BlobId]) -> usize {
        let Some(stored) = self.blobs.get(&section) else {
            return 0;
        };
        ids.iter()
            .filter_map(|id| stored.get(id))
            .map(|blob| blob.bytes)
            .sum()
    }

    fn note_held(&mut self, section: Section, blob: &Blob) {
        self.held_blobs.insert(
            blob.id(),
            HeldBlob {
                id: blob.id(),
                section,
                author: blob.header().author,
                time_ms: blob.header().time_ms,
                bytes: blob.len(),
            },
        );
    }

    /// Whether another blob by `author` of `bytes` bytes fits in what is held from it.
    /// `more` is how many of its blobs this ingest holds already, `bytes` their size with the
    /// new one's: the bound is on what is held and what is about to be, together.
    fn room_to_hold(&self, author: &PeerId, more: usize, bytes: usize) -> bool {
        let (count, total) = self
            .held_blobs
            .values()
            .filter(|held| held.author == *author)
            .fold((0, 0), |(n, b), held| (n + 1, b + held.bytes));
        count + more < HELD_BLOBS_PER_AUTHOR_MAX && total + bytes <= HELD_BYTES_PER_AUTHOR_MAX
    }

    /// The blobs held for the patient, oldest first.
    pub fn held(&self) -> Vec<HeldBlob> {
        let mut held: Vec<HeldBlob> = self.held_blobs.values().copied().collect();
        held.sort_by_key(|h| (h.time_ms, h.id));
        held
    }

    /// The newest time (as its author says) of any blob stored, in Unix milliseconds.
    pub fn newest_blob_ms(&self) -> Option<i64> {
        self.blobs
            .values()
            .flat_map(|blobs| blobs.values())
            .map(|stored| i64::try_from(stored.time).unwrap_or(i64::MAX))
            .max()
    }

    /// The stored blobs of `author` in `sections`, newest first.
    fn blobs_by(&self, author: &PeerId, sections: &[Section]) -> Vec<(Section, BlobId)> {
        let mut found: Vec<(u64, Section, BlobId)> = sections
            .iter()
            .filter_map(|section| Some((*section, self.blobs.get(section)?)))
            .flat_map(|(section, blobs)| blobs.iter().map(move |entry| (section, entry)))
            .filter(|(_, (_, stored))| stored.author == *author)
            .map(|(section, (id, stored))| (stored.time, section, *id))
            .collect();
        found.sort_by(|a, b| b.cmp(a));
        found
            .into_iter()
            .map(|(_, section, id)| (section, id))
            .collect()
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

mod held;
mod ingest;
mod read;
mod sealed;
#[cfg(test)]
mod tests;
mod write;
