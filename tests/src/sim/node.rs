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
    sync::{
        Incoming, InitiatorSession, Local, ResponderSession, SyncError, message::Message,
        session::opening,
    },
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
    actor: ActorId,
    /// The records it holds.
    pub replicas: BTreeMap<RecordId, Replica>,
    initiators: BTreeMap<(PeerId, u64), InitiatorSession>,
    responders: BTreeMap<(PeerId, u64), ResponderSession>,
    /// Replicas of records not held, made for a peer's session (a new grantee's first sync).
    strangers: BTreeMap<(PeerId, u64), Replica>,
    /// Sessions that ended with an error, by kind, for the report.
    pub errors: BTreeMap<String, usize>,
}

/// What a node sends: (to, bytes).
pub type Outbox = Vec<(PeerId, Vec<u8>)>;

impl SimNode {
    /// A new node with fresh keys (a root key for the patient's first device).
    pub fn new(name: &str, role: Role, with_root: bool) -> SimNode {
        let keys = Keystore::generate(with_root);
        let peer = keys.device.peer_id();
        let mut actor = peer.public_key()[..16].to_vec();
        actor.extend_from_slice(&[0; 8]);
        SimNode {
            name: name.to_string(),
            role,
            keys,
            store: MemoryStore::new(),
            up: true,
            actor: ActorId::from(actor),
            replicas: BTreeMap::new(),
            initiators: BTreeMap::new(),
            responders: BTreeMap::new(),
            strangers: BTreeMap::new(),
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
            batch.ledger_op(id, op.id(), op.bytes());
        }
        self.store.commit(batch).expect("memory store");
        let replica =
            Replica::open(&self.store, id, self.peer(), &self.keys.age).expect("memory store");
        self.replicas.insert(id, replica);
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
            .replicas
            .get_mut(&record)
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
        let replica = self.replicas.get_mut(&record)?;
        let (record, _warnings) = replica
            .materialise(&self.store, meta, &self.actor)
            .expect("memory store");
        Some(record)
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
        let replica = self.replicas.get_mut(&record).expect("materialised");
        match replica.save(&self.store, &self.keys.device, &mut doc, now_ms) {
            Ok(_) => Ok(true),
            // No key to write with: this node may not write that section (any more).
            Err(ReplicaError::Consent(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Compacts every section this owner device can.
    pub fn compact(&mut self, record: RecordId, now_ms: i64) -> Result<(), ReplicaError> {
        let Some(mut doc) = self.materialise(record) else {
            return Ok(());
        };
        let replica = self.replicas.get_mut(&record).expect("materialised");
        for section in replica.materialised_sections() {
            replica.compact_section(&self.store, &self.keys.device, &mut doc, section, now_ms)?;
        }
        Ok(())
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
        let mut out = Vec::new();
        let mut records: Vec<RecordId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.admits(&peer, now_ms))
            .map(|(id, _)| *id)
            .collect();
        if let Some(probe) = probe.filter(|p| !self.replicas.contains_key(p)) {
            self.replicas
                .insert(probe, Replica::empty(probe, self.peer()));
            records.push(probe);
        }
        for (n, record) in records.into_iter().enumerate() {
            let session = session.wrapping_add(n as u64);
            if self
                .initiators
                .iter()
                .any(|((p, _), s)| *p == peer && s.record() == record)
            {
                continue;
            }
            let replica = self.replicas.get_mut(&record).expect("listed above");
            let local = Local {
                replica,
                store: &self.store,
                age: &self.keys.age,
            };
            match InitiatorSession::start(&local, peer, session, now_ms) {
                Ok((initiator, bytes)) => {
                    self.initiators.insert((peer, session), initiator);
                    out.push((peer, bytes));
                }
                Err(e) => self.note_error(&e),
            }
        }
        self.replicas.retain(|_, r| r.is_held());
        out
    }

    /// Takes a message from `from`; returns what to send back.
    pub fn receive(&mut self, from: PeerId, bytes: &[u8], now_ms: i64) -> Outbox {
        let incoming = match Incoming::decode(bytes) {
            Ok(incoming) => incoming,
            Err(e) => {
                self.note_error(&e);
                return Vec::new();
            }
        };
        let reply = match &incoming.message {
            Message::Response(response) => {
                let key = (from, response.session);
                self.on_response(key, incoming, now_ms)
            }
            Message::Request(request) => {
                let key = (from, request.session);
                self.on_request(key, incoming, now_ms)
            }
        };
        reply.map(|bytes| vec![(from, bytes)]).unwrap_or_default()
    }

    fn on_response(
        &mut self,
        key: (PeerId, u64),
        incoming: Incoming,
        now_ms: i64,
    ) -> Option<Vec<u8>> {
        let initiator = self.initiators.get_mut(&key)?;
        let record = initiator.record();
        let mut empty;
        let replica = match self.replicas.get_mut(&record) {
            Some(replica) => replica,
            None => {
                empty = Replica::empty(record, self.keys.device.peer_id());
                &mut empty
            }
        };
        let mut local = Local {
            replica,
            store: &self.store,
            age: &self.keys.age,
        };
        let result = initiator.receive(&mut local, incoming, now_ms);
        let done = initiator.is_done();
        match result {
            Ok(reply) => {
                if done {
                    if std::env::var("SIM_DEBUG").is_ok() {
                        eprintln!(
                            "{} finished a session with {}: {:?}",
                            self.name,
                            key.0.short(),
                            initiator.stats()
                        );
                    }
                    self.initiators.remove(&key);
                }
                reply
            }
            Err(e) => {
                self.initiators.remove(&key);
                self.note_error(&e);
                None
            }
        }
    }

    fn on_request(
        &mut self,
        key: (PeerId, u64),
        incoming: Incoming,
        now_ms: i64,
    ) -> Option<Vec<u8>> {
        let me = self.peer();
        let record = match self.responders.get(&key) {
            Some(responder) => responder.record(),
            None => match opening(&incoming) {
                Ok((_, record)) => record,
                Err(e) => {
                    self.note_error(&e);
                    return None;
                }
            },
        };
        let replica = match self.replicas.get_mut(&record) {
            Some(replica) => replica,
            None => self
                .strangers
                .entry(key)
                .or_insert_with(|| Replica::empty(record, me)),
        };
        let mut local = Local {
            replica,
            store: &self.store,
            age: &self.keys.age,
        };
        let result = match self.responders.get_mut(&key) {
            Some(responder) => responder.receive(&mut local, incoming, now_ms),
            None => ResponderSession::open(&mut local, key.0, incoming, now_ms).map(
                |(responder, reply)| {
                    self.responders.insert(key, responder);
                    reply
                },
            ),
        };
        // A record received for the first time is now held.
        if let Some(stranger) = self.strangers.remove(&key) {
            if stranger.is_held() {
                self.replicas.entry(stranger.id()).or_insert(stranger);
            } else {
                self.strangers.insert(key, stranger);
            }
        }
        match result {
            Ok(reply) => {
                if self.responders.get(&key).is_some_and(|r| r.is_closed()) {
                    self.responders.remove(&key);
                    self.strangers.remove(&key);
                }
                reply
            }
            Err(e) => {
                self.responders.remove(&key);
                self.strangers.remove(&key);
                self.note_error(&e);
                None
            }
        }
    }

    /// Passes time: requests sent again, sessions given up.
    pub fn tick(&mut self, now_ms: i64) -> Outbox {
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for (key, initiator) in &mut self.initiators {
            let record = initiator.record();
            let mut empty = Replica::empty(record, self.keys.device.peer_id());
            let replica = self.replicas.get_mut(&record).unwrap_or(&mut empty);
            let local = Local {
                replica,
                store: &self.store,
                age: &self.keys.age,
            };
            match initiator.poll(&local, now_ms) {
                Ok(Some(bytes)) => out.push((key.0, bytes)),
                Ok(None) => {}
                Err(e) => failed.push((*key, e)),
            }
        }
        for (key, e) in failed {
            self.initiators.remove(&key);
            self.note_error(&e);
        }
        let idle: Vec<(PeerId, u64)> = self
            .responders
            .iter()
            .filter(|(_, r)| r.is_idle(now_ms))
            .map(|(key, _)| *key)
            .collect();
        for key in idle {
            self.responders.remove(&key);
            self.strangers.remove(&key);
        }
        out
    }

    /// Whether any session is under way.
    pub fn is_syncing(&self) -> bool {
        !self.initiators.is_empty() || !self.responders.is_empty()
    }

    /// A crash: everything not in the store is lost. The node stays down until [`restart`].
    ///
    /// [`restart`]: SimNode::restart
    pub fn crash(&mut self) {
        self.up = false;
        self.replicas.clear();
        self.initiators.clear();
        self.responders.clear();
        self.strangers.clear();
    }

    /// Comes back from the store.
    pub fn restart(&mut self) {
        self.up = true;
        for id in self.store.records().expect("memory store") {
            let replica =
                Replica::open(&self.store, id, self.peer(), &self.keys.age).expect("memory store");
            self.replicas.insert(id, replica);
        }
    }

    fn note_error(&mut self, error: &SyncError) {
        let kind = format!("{error:?}");
        let kind = kind
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("?")
            .to_string();
        *self.errors.entry(kind).or_default() += 1;
    }
}
