//! A simulated node: the real replica, store and sync sessions of `phr-core`, with the network
//! and the clock left to the simulator.

use std::collections::BTreeMap;

use automerge::ActorId;
use phr_core::{
    Record, RecordMeta, Stamp,
    keys::{PeerId, RecordId},
    keystore::Keystore,
    ledger::{Ledger, OpBody},
    party::{Party, Role},
    record::Author,
    replica::{Replica, ReplicaError},
    store::{MemoryStore, Store},
    sync::{Ended, Engine},
    vault::Batch,
};
use serde_json::Value;

/// One node under simulation. Its [`MemoryStore`] is its disk: a crash drops everything else.
#[derive(Debug)]
pub struct SimNode {
    /// A name for reports ("laptop", "gp", ...).
    pub name: String,
    /// Patient device, provider, relay; the outsider is a provider nobody granted anything.
    pub role: Role,
    /// Its keys (kept across crashes, as the keystore file would be).
    pub keys: Keystore,
    /// Its disk.
    pub store: MemoryStore,
    /// Whether it is running.
    pub up: bool,
    /// A withdrawn party turned hostile: it takes no ledger operation any more, so it never
    /// learns of its withdrawal and goes on writing and compacting with its old keys and stale
    /// ledger heads, as a stolen phone or a revoked provider running modified software would.
    pub hostile: bool,
    actor: ActorId,
    /// Its records and sessions.
    engine: Engine,
    /// Sessions that ended with an error, by kind, for the report.
    pub errors: BTreeMap<String, usize>,
}

pub use phr_core::sync::engine::Outbox;

impl SimNode {
    /// A new node with fresh keys (a root key for the patient's first device).
    pub fn new(name: &str, role: Role, with_root: bool) -> SimNode {
        let keys = Keystore::generate(with_root);
        let peer = keys.device.peer_id();
        let mut actor = peer.public_key()[..16].to_vec();
        actor.extend_from_slice(&[0; 8]);
        let mut engine =
            Engine::open(&MemoryStore::new(), peer, &keys.age).expect("an empty store");
        engine.set_signer(&keys.device);
        SimNode {
            name: name.to_string(),
            role,
            keys,
            store: MemoryStore::new(),
            up: true,
            hostile: false,
            actor: ActorId::from(actor),
            engine,
            errors: BTreeMap::new(),
        }
    }

    /// Its PeerId.
    pub fn peer(&self) -> PeerId {
        self.keys.device.peer_id()
    }

    /// How ledgers name it.
    pub fn party(&self) -> Party {
        Party {
            peer: self.peer(),
            recipient: self.keys.age.recipient(),
            name: self.name.clone(),
            role: self.role,
            ods: None,
        }
    }

    /// Creates a record owned by this node (it must hold a root key); returns its id.
    pub fn create_record(&mut self, now_ms: i64) -> RecordId {
        let root = self
            .keys
            .root
            .as_ref()
            .expect("the first device holds the root key");
        let ledger = Ledger::create(root, self.party(), now_ms).expect("create");
        let id = ledger.record();
        let mut batch = Batch::new();
        for op in ledger.ops() {
            batch.ledger_op(id, op);
        }
        self.store.commit(batch).expect("memory store");
        let replica =
            Replica::open(&self.store, id, self.peer(), &self.keys.age).expect("memory store");
        self.engine.insert(replica);
        id
    }

    /// Signs a consent change (with the root key when `root`) on a held record.
    pub fn consent(
        &mut self,
        record: RecordId,
        body: OpBody,
        root: bool,
        now_ms: i64,
    ) -> Result<(), ReplicaError> {
        let replica = self
            .engine
            .replica_mut(&record)
            .ok_or(ReplicaError::NotOwner)?;
        let signer = match (root, &self.keys.root) {
            (true, Some(root)) => root,
            _ => &self.keys.device,
        };
        replica.change_consent(&self.store, signer, &self.keys.device, body, now_ms)?;
        Ok(())
    }

    /// The record as this node can read it now.
    pub fn materialise(&mut self, record: RecordId) -> Option<Record> {
        let meta = RecordMeta {
            id: record.to_string(),
            subject: None,
            nhs_number: None,
        };
        let replica = self.engine.replica_mut(&record)?;
        let (record, _warnings) = replica
            .materialise(&self.store, meta, &self.actor, &self.keys.age)
            .expect("memory store");
        Some(record)
    }

    /// Opens the record as `phr` does: materialises it and keeps at once this device's entries
    /// that were written again because they had built on a withdrawn party's change.
    pub fn open(&mut self, record: RecordId, now_ms: i64) -> Result<(), ReplicaError> {
        let Some(mut doc) = self.materialise(record) else {
            return Ok(());
        };
        if doc.has_unsaved() {
            let replica = self.engine.replica_mut(&record).expect("materialised");
            replica.save(&self.store, &self.keys.device, &mut doc, now_ms)?;
        }
        Ok(())
    }

    /// Writes resources to a held record and saves: acknowledged once this returns `Ok`.
    /// `Ok(false)` when a resource is in conflict (a person must resolve it first) or this node
    /// cannot write its section.
    pub fn write(
        &mut self,
        record: RecordId,
        resources: &[Value],
        now_ms: i64,
    ) -> Result<bool, ReplicaError> {
        let Some(mut doc) = self.materialise(record) else {
            return Ok(false);
        };
        let author = Author {
            id: self.peer().to_string(),
            name: self.name.clone(),
        };
        let stamp = Stamp {
            author: &author,
            time: jiff::Timestamp::from_millisecond(now_ms).expect("sim time"),
        };
        for resource in resources {
            if doc.put(stamp, resource).is_err() {
                return Ok(false);
            }
        }
        doc.commit(stamp, "sim write");
        let replica = self.engine.replica_mut(&record).expect("materialised");
        match replica.save(&self.store, &self.keys.device, &mut doc, now_ms) {
            Ok(_) => Ok(true),
            // No key to write with: this node may not write that section (any more).
            Err(ReplicaError::Consent(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Logs `resource` as this grantee's audit entry, sealed to the owners and stored (its next
    /// sync pushes it), as a provider's node logs a read; `compressed` stores the change in
    /// Automerge's compressed form, as a bomb would. `Ok(false)` if its ledger no longer lets
    /// it append to `audit`.
    pub fn log_audit(
        &mut self,
        record: RecordId,
        resource: &Value,
        compressed: bool,
        now_ms: i64,
    ) -> Result<bool, ReplicaError> {
        let author = Author {
            id: self.peer().to_string(),
            name: self.name.clone(),
        };
        let stamp = Stamp {
            author: &author,
            time: jiff::Timestamp::from_millisecond(now_ms).expect("sim time"),
        };
        let actor = phr_core::audit::entry_actor(&self.peer());
        let (_, mut change) =
            phr_core::record::lone_change(stamp, resource, actor, "audit: show").expect("a key");
        if compressed {
            let mut parsed =
                automerge::Change::try_from(change.as_slice()).expect("a change it just made");
            change = parsed.bytes().into_owned();
        }
        let Some(replica) = self.engine.replica_mut(&record) else {
            return Ok(false);
        };
        let blob = match replica.seal_to_owners(&self.keys.device, &change, now_ms) {
            Ok(blob) => blob,
            Err(ReplicaError::Consent(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        replica.store_sealed(&self.store, vec![blob])?;
        Ok(true)
    }

    /// Drops this node's own audit entries among `ids` without asking whose word it has: only
    /// for the planted bug that drops them on a relay's word.
    pub fn forget_audit(
        &mut self,
        record: RecordId,
        ids: &std::collections::BTreeSet<phr_core::keys::BlobId>,
    ) {
        let mut batch = phr_core::vault::Batch::new();
        for id in ids {
            batch.remove_blob(record, phr_core::Section::Audit, *id);
        }
        self.store.commit(batch).expect("a memory store commits");
        if let Some(replica) = self.engine.replica_mut(&record) {
            replica.forget_blobs_for_test(phr_core::Section::Audit, ids);
        }
    }

    /// Compacts every section this owner device can.
    pub fn compact(&mut self, record: RecordId, now_ms: i64) -> Result<(), ReplicaError> {
        let Some(mut doc) = self.materialise(record) else {
            return Ok(());
        };
        let replica = self.engine.replica_mut(&record).expect("materialised");
        for section in replica.materialised_sections() {
            replica.compact_section(&self.store, &self.keys.device, &mut doc, section, now_ms)?;
        }
        Ok(())
    }

    /// The planted bug of an owner device: writes an entry in `victim`'s name, as `victim`'s
    /// actor, and folds it into a compaction of `summary` (which only owners write).
    pub fn forge_as(&mut self, record: RecordId, victim: PeerId, now_ms: i64) {
        let Some(mut doc) = self.materialise(record) else {
            return;
        };
        let mut actor = victim.public_key()[..16].to_vec();
        actor.extend_from_slice(&[0; 8]);
        let own = self.actor.clone();
        doc.doc_for_provenance(phr_core::section::Section::Summary)
            .set_actor(ActorId::from(actor));
        let author = Author {
            id: victim.to_string(),
            name: "gp".into(),
        };
        let stamp = Stamp {
            author: &author,
            time: jiff::Timestamp::from_millisecond(now_ms).expect("sim time"),
        };
        let forged = serde_json::json!({"resourceType": "AllergyIntolerance", "id": "forged",
            "code": {"text": "Penicillin allergy: resolved"}});
        if doc.put(stamp, &forged).is_err() {
            return;
        }
        doc.commit(stamp, "forged");
        doc.doc_for_provenance(phr_core::section::Section::Summary)
            .set_actor(own);
        let replica = self.engine.replica_mut(&record).expect("materialised");
        let _ = replica.compact_section(
            &self.store,
            &self.keys.device,
            &mut doc,
            phr_core::section::Section::Summary,
            now_ms,
        );
    }

    /// The planted bug of an owner device: takes in every entry it holds, as if the patient
    /// had accepted each.
    pub fn accept_all_held(&mut self, record: RecordId, now_ms: i64) {
        let Some(replica) = self.engine.replica_mut(&record) else {
            return;
        };
        let ids: Vec<_> = replica.held().into_iter().map(|held| held.id).collect();
        if !ids.is_empty() {
            let _ = replica.accept_held(&self.store, &self.keys.device, &ids, now_ms);
        }
    }

    /// Starts a session with `peer` for every held record whose ledger admits it (and, for an
    /// outsider probing, for `probe`, a record it does not hold).
    pub fn start_sync(
        &mut self,
        peer: PeerId,
        probe: Option<RecordId>,
        session: u64,
        now_ms: i64,
    ) -> Outbox {
        let out = self
            .engine
            .start(&self.store, &self.keys.age, peer, probe, session, now_ms);
        self.note_ended();
        out
    }

    /// Takes a message from `from`; returns what to send back.
    pub fn receive(&mut self, from: PeerId, bytes: &[u8], now_ms: i64) -> Outbox {
        let stripped;
        let bytes = if self.hostile {
            stripped = without_ledger(bytes);
            stripped.as_deref().unwrap_or(bytes)
        } else {
            bytes
        };
        let reply = self
            .engine
            .receive(&self.store, &self.keys.age, from, bytes, now_ms);
        self.note_ended();
        reply.map(|bytes| vec![(from, bytes)]).unwrap_or_default()
    }

    /// Passes time: requests sent again, sessions given up.
    pub fn tick(&mut self, now_ms: i64) -> Outbox {
        let out = self.engine.tick(&self.store, &self.keys.age, now_ms);
        self.note_ended();
        out
    }

    /// A crash: everything not in the store is lost. The node stays down until [`restart`].
    ///
    /// [`restart`]: SimNode::restart
    pub fn crash(&mut self) {
        self.up = false;
        self.engine =
            Engine::open(&MemoryStore::new(), self.peer(), &self.keys.age).expect("an empty store");
        self.engine.set_signer(&self.keys.device);
    }

    /// Comes back from the store.
    pub fn restart(&mut self) {
        self.up = true;
        self.engine = Engine::open(&self.store, self.peer(), &self.keys.age).expect("memory store");
        self.engine.set_signer(&self.keys.device);
    }

    /// How many sessions this node started are under way.
    pub fn initiating(&self) -> usize {
        self.engine.initiating()
    }

    /// The records this node holds.
    pub fn replicas(&self) -> &BTreeMap<RecordId, Replica> {
        self.engine.replicas()
    }

    fn note_ended(&mut self) {
        for ended in self.engine.take_ended() {
            match ended {
                Ended::Synced { peer, stats, .. } => {
                    if std::env::var("SIM_DEBUG").is_ok() {
                        eprintln!(
                            "{} finished a session with {}: {stats:?}",
                            self.name,
                            peer.short()
                        );
                    }
                }
                Ended::Failed { error, .. } => {
                    let kind = format!("{error:?}");
                    let kind = kind
                        .split(['(', ' ', '{'])
                        .next()
                        .unwrap_or("?")
                        .to_string();
                    *self.errors.entry(kind).or_default() += 1;
                }
            }
        }
    }
}

/// A message without the ledger operations it carries (what a hostile node takes in), or
/// `None` if it carries none or does not decode.
fn without_ledger(bytes: &[u8]) -> Option<Vec<u8>> {
    use phr_core::{
        replica::Topic,
        sync::{Incoming, message::Message},
    };
    let mut message = Incoming::decode(bytes).ok()?.message;
    let items = match &mut message {
        Message::Request(r) => &mut r.items,
        Message::Response(r) => &mut r.items,
    };
    let before = items.len();
    items.retain(|(topic, _)| *topic != Topic::Ledger);
    (items.len() != before).then(|| message.encode())
}
