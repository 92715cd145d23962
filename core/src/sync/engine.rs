//! The sync engine: every record a node holds and every session it runs, still with no I/O.
//!
//! A node talks to many peers about many records at once. The [`Engine`] keeps the node's
//! replicas and its sessions, keyed by peer and session id; it starts sessions, routes each
//! incoming message to its session (opening a responder for a new one), passes time, and reports
//! what ended. The simulator drives it over its simulated network, and `phr-node` over libp2p: the
//! same code either way. The caller owns the store, the keys, the clock and the network.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    keys::{AgeIdentity, PeerId, RecordId},
    replica::{Intake, Replica, ReplicaError, Welcome},
    section::Section,
    store::Store,
    sync::{
        Incoming, InitiatorSession, Local, ResponderSession, SessionStats, SyncError,
        message::Message, session::opening,
    },
};

/// Notes that `record` changed, by what came from `from` (`None`: this node, or unknown).
fn note_changed(
    changed: &mut BTreeMap<RecordId, Option<PeerId>>,
    record: RecordId,
    from: Option<PeerId>,
) {
    changed
        .entry(record)
        .and_modify(|source| {
            if *source != from {
                *source = None;
            }
        })
        .or_insert(from);
}

/// Messages to send: (to, bytes).
pub type Outbox = Vec<(PeerId, Vec<u8>)>;

/// The most replicas of records not held (a new grantee's first sync) a node keeps for one peer
/// between its messages.
pub const STRANGERS_PER_PEER_MAX: usize = 2;

/// The most such replicas a node keeps in all.
pub const STRANGERS_MAX: usize = 64;

/// The most bytes of ledger operations one such replica keeps in memory: far more than an honest
/// record's ledger (10,000 operations of a few hundred bytes).
pub const STRANGER_LEDGER_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The most bytes of ledger operations all such replicas keep in memory together.
pub const STRANGERS_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How a session ended, for the caller's logs and waits.
#[derive(Debug)]
pub enum Ended {
    /// A session this node started finished: the record is in step with the peer as of then.
    Synced {
        /// The peer.
        peer: PeerId,
        /// The record.
        record: RecordId,
        /// What the session did.
        stats: SessionStats,
    },
    /// A session ended early (the peer broke the protocol, went quiet, or this node failed).
    Failed {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: SyncError,
    },
}

/// A node's replicas and sessions. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    me: PeerId,
    replicas: BTreeMap<RecordId, Replica>,
    /// The store's latest generation when its records were last read ([`Store::changed_since`]):
    /// a refresh reads again only the records changed after it.
    seen: u64,
    initiators: BTreeMap<(PeerId, u64), InitiatorSession>,
    responders: BTreeMap<(PeerId, u64), ResponderSession>,
    /// Replicas of records not held, made for a peer's session (a new grantee's first sync).
    strangers: Strangers,
    /// Which records not held this node takes in, and how much it stores of each.
    intake: Intake,
    /// How many held records wait for a person to accept them, kept as records come and go
    /// (every message from a stranger asks).
    pending: usize,
    /// How many times a message changed what a replica holds (ledger operations and blobs).
    taken_in: u64,
    /// How many times what decides who is admitted may have changed: a ledger operation taken
    /// in, a record held, read again or dropped, the intake changed.
    ledgers: u64,
    /// The peers the held records admit, as last worked out, for as long as that holds.
    admitted: std::sync::Mutex<Option<Admitted>>,
    ended: Vec<Ended>,
    /// This node's device key, with which its sessions pack the run of its own small writes a
    /// peer lacks into one blob ([`Engine::set_signer`]).
    signer: Option<crate::keys::SigningKey>,
    /// The records whose items changed since [`Engine::take_changed`] was last asked, each with
    /// the one peer all its changes came from (`None`: several, or this node's own): what a
    /// node offers its connected peers.
    changed: BTreeMap<RecordId, Option<PeerId>>,
}

/// [`Engine::admitted_peers`] as last worked out: valid while no ledger changed
/// ([`Engine::ledger_changes`]) and until the first grant among them lapses.
#[derive(Debug, Clone)]
struct Admitted {
    peers: BTreeSet<PeerId>,
    ledgers: u64,
    from_ms: i64,
    until_ms: i64,
}

/// The replicas of records not held kept between a peer's messages, with the bytes of their
/// ledgers counted as they come and go (each message from a stranger asks whether one more
/// fits).
#[derive(Debug)]
struct Strangers {
    kept: BTreeMap<(PeerId, u64), (Replica, usize)>,
    bytes: usize,
    /// [`STRANGER_LEDGER_BYTES_MAX`] and [`STRANGERS_BYTES_MAX`], lowered by tests.
    ledger_bytes_max: usize,
    bytes_max: usize,
}

impl Default for Strangers {
    fn default() -> Strangers {
        Strangers {
            kept: BTreeMap::new(),
            bytes: 0,
            ledger_bytes_max: STRANGER_LEDGER_BYTES_MAX,
            bytes_max: STRANGERS_BYTES_MAX,
        }
    }
}

impl Strangers {
    fn insert(&mut self, key: (PeerId, u64), replica: Replica) {
        let bytes = replica.ledger().bytes();
        self.bytes += bytes;
        if let Some((_, old)) = self.kept.insert(key, (replica, bytes)) {
            self.bytes -= old;
        }
    }

    fn remove(&mut self, key: &(PeerId, u64)) -> Option<Replica> {
        let (replica, bytes) = self.kept.remove(key)?;
        self.bytes -= bytes;
        Some(replica)
    }

    fn forget_peer(&mut self, peer: &PeerId) {
        let keys: Vec<(PeerId, u64)> = self
            .kept
            .range((*peer, 0)..=(*peer, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.remove(&key);
        }
    }

    fn of_peer(&self, peer: &PeerId) -> usize {
        self.kept.range((*peer, 0)..=(*peer, u64::MAX)).count()
    }
}

impl Engine {
    /// The engine of node `me`, with every record its store holds.
    pub fn open(store: &dyn Store, me: PeerId, age: &AgeIdentity) -> Result<Engine, ReplicaError> {
        let mut engine = Engine {
            me,
            replicas: BTreeMap::new(),
            seen: store.changed_since(u64::MAX)?.0,
            initiators: BTreeMap::new(),
            responders: BTreeMap::new(),
            strangers: Strangers::default(),
            intake: Intake::default(),
            pending: 0,
            taken_in: 0,
            ledgers: 0,
            admitted: std::sync::Mutex::new(None),
            ended: Vec::new(),
            signer: None,
            changed: BTreeMap::new(),
        };
        for id in store.records()? {
            engine
                .replicas
                .insert(id, Replica::open(store, id, me, age)?);
        }
        engine.count_pending();
        Ok(engine)
    }

    /// Gives the engine this node's device key: an owner device's sessions then pack the run
    /// of its own changes blobs a peer lacks into one compaction before listing them
    /// ([`crate::replica::Replica::form_run`]). Without it they are sent one by one.
    pub fn set_signer(&mut self, device: &crate::keys::SigningKey) {
        self.signer = Some(crate::keys::SigningKey::from_seed(device.seed()));
    }

    /// Which records not held this node takes in (see [`Welcome`]).
    pub fn set_welcome(&mut self, welcome: Welcome) {
        self.set_intake(Intake {
            welcome,
            ..self.intake.clone()
        });
    }

    /// Sets how this node takes in records and how many bytes of each it stores (by default:
    /// every record, no acceptance, no quota); the quotas of held records change at once.
    pub fn set_intake(&mut self, intake: Intake) {
        if intake == self.intake {
            return;
        }
        self.ledgers += 1;
        for (id, replica) in &mut self.replicas {
            replica.set_quota(intake.quota_of(id));
        }
        self.intake = intake;
        self.count_pending();
    }

    /// How many held records wait for a person to accept them.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Counts the records waiting again, after the records held or the intake changed.
    fn count_pending(&mut self) {
        let intake = &self.intake;
        self.pending = self
            .replicas
            .keys()
            .filter(|id| intake.is_pending(id))
            .count();
    }

    /// Adds a record newly held (one taken in from a peer), keeping the count of those waiting.
    fn hold(&mut self, replica: Replica) {
        self.ledgers += 1;
        let id = replica.id();
        if self.replicas.insert(id, replica).is_none() && self.intake.is_pending(&id) {
            self.pending += 1;
        }
    }

    /// How many times a message changed what a held record (or one taken in) holds: a caller
    /// that compares it before and after a message knows whether to pass something on, without
    /// counting every record's items.
    pub fn taken_in(&self) -> u64 {
        self.taken_in
    }

    /// How many times what decides who is admitted (and who is named what) may have changed:
    /// a caller that compares it before and after a message knows whether to work out again
    /// what follows from the ledgers, without walking every record.
    pub fn ledger_changes(&self) -> u64 {
        self.ledgers
    }

    /// Reads again the stored records another process changed (a `phr` command run while the
    /// node was up): those changed since the records were last read ([`Store::changed_since`]),
    /// new ones included; records it no longer holds are dropped (a declined patient). Every
    /// other replica stays as it is, so one command's cost does not grow with the number of
    /// records held. (The engine's own writes since count as changed too: read again, once.) Sessions in progress carry on with the new replicas: what
    /// they send is judged again at send time. Returns how many replicas it read again.
    pub fn refresh(&mut self, store: &dyn Store, age: &AgeIdentity) -> Result<usize, ReplicaError> {
        let (last, changed) = store.changed_since(self.seen)?;
        let mut reopened = 0;
        let mut dropped = false;
        let mut added = false;
        let mut changed_ledgers = false;
        for id in changed {
            // Deleted (a declined patient): no ledger stored any more.
            if store.ledger_ops(&id)?.is_empty() {
                dropped |= self.replicas.remove(&id).is_some();
                continue;
            }
            let mut replica = Replica::open(store, id, self.me, age)?;
            replica.set_quota(self.intake.quota_of(&id));
            // Only a changed ledger changes who is admitted (most commands add a blob).
            let ledger_changed = self.replicas.get(&id).is_none_or(|before| {
                before.ledger().len() != replica.ledger().len()
                    || before.ledger().heads() != replica.ledger().heads()
            });
            changed_ledgers |= ledger_changed;
            // Read again because this engine stored to it since, it may hold what it held.
            let same = !ledger_changed
                && self.replicas.get(&id).is_some_and(|before| {
                    Section::ALL
                        .into_iter()
                        .all(|s| before.blob_ids(s).eq(replica.blob_ids(s)))
                });
            if !same {
                note_changed(&mut self.changed, id, None);
            }
            added |= self.replicas.insert(id, replica).is_none();
            reopened += 1;
        }
        self.seen = last;
        if changed_ledgers || dropped {
            self.ledgers += 1;
        }
        // Which records wait for acceptance changes only with the records held.
        if added || dropped {
            self.count_pending();
        }
        Ok(reopened)
    }

    /// The records whose items changed since the last call (taken in from a peer, or read
    /// again after another process wrote them), each with the one peer all its changes came
    /// from (`None`: several, or this node's own), and forgets them: a node offers each to the
    /// connected peers it admits but that one ([`Engine::start_for`]), so one patient's change
    /// costs the same whatever the number of records and peers.
    pub fn take_changed(&mut self) -> BTreeMap<RecordId, Option<PeerId>> {
        std::mem::take(&mut self.changed)
    }

    /// Every peer that some held record admits at `now_ms` (owner devices, grantees, relays),
    /// this node excepted: the peers a node keeps in step with, and gives the room kept for
    /// admitted peers. A record waiting for a provider's acceptance admits no one (anyone can
    /// make a record that grants a provider): its devices sync as strangers until a person
    /// accepts it, and the provider does not dial them.
    ///
    /// Worked out once and kept until a ledger changes or the first grant among them lapses, so
    /// asking after every message, every tick and every status costs nothing per record.
    pub fn admitted_peers(&self, now_ms: i64) -> std::collections::BTreeSet<PeerId> {
        self.with_admitted(now_ms, Clone::clone)
    }

    /// Whether some held record admits `peer` at `now_ms` ([`Engine::admitted_peers`], without
    /// copying the set).
    pub fn admits(&self, peer: &PeerId, now_ms: i64) -> bool {
        self.with_admitted(now_ms, |peers| peers.contains(peer))
    }

    fn with_admitted<R>(
        &self,
        now_ms: i64,
        f: impl FnOnce(&std::collections::BTreeSet<PeerId>) -> R,
    ) -> R {
        let mut cache = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache
            .as_ref()
            .filter(|c| c.ledgers == self.ledgers && c.from_ms <= now_ms && now_ms < c.until_ms)
        {
            return f(&cached.peers);
        }
        let mut peers = std::collections::BTreeSet::new();
        let mut until_ms = i64::MAX;
        let admitting = self
            .replicas
            .iter()
            .filter(|(id, r)| r.is_held() && !self.intake.is_pending(id))
            .map(|(_, r)| r);
        for replica in admitting {
            let state = replica.ledger().state();
            peers.extend(state.admitted_peers(now_ms));
            if let Some(lapses) = state
                .grants
                .iter()
                .filter_map(|grant| grant.expires_ms)
                .filter(|expires| *expires > now_ms)
                .min()
            {
                until_ms = until_ms.min(lapses);
            }
        }
        peers.remove(&self.me);
        let answer = f(&peers);
        *cache = Some(Admitted {
            peers,
            ledgers: self.ledgers,
            from_ms: now_ms,
            until_ms,
        });
        answer
    }

    /// Every party some held record withdrew (a revoked grantee, a removed device) and does
    /// not admit again, with the records and how: `revoked` or `removed`.
    pub fn withdrawn_peers(
        &self,
        now_ms: i64,
    ) -> std::collections::BTreeMap<PeerId, Vec<(RecordId, &'static str)>> {
        let mut out: std::collections::BTreeMap<PeerId, Vec<(RecordId, &'static str)>> =
            std::collections::BTreeMap::new();
        for replica in self.replicas.values().filter(|r| r.is_held()) {
            let state = replica.ledger().state();
            let parties = state
                .revoked
                .iter()
                .map(|g| g.grantee.peer)
                .chain(state.removed_devices.iter().copied())
                .chain(state.closes.keys().copied());
            for peer in parties.collect::<std::collections::BTreeSet<_>>() {
                if peer == self.me
                    || replica.admits(&peer, now_ms)
                    || replica.withdrawal(&peer).is_empty()
                {
                    continue;
                }
                let how = if state.removed_devices.contains(&peer) {
                    "removed"
                } else {
                    "revoked"
                };
                out.entry(peer).or_default().push((replica.id(), how));
            }
        }
        out
    }

    /// The connection to `peer` closed: every session with it ends (those this node started as
    /// [`SyncError::Disconnected`]). A peer that restarted has lost its side of them, and
    /// messages of a session it no longer knows would only be refused; the next sync with it
    /// starts afresh.
    pub fn disconnected(&mut self, peer: &PeerId) {
        let started: Vec<(PeerId, u64)> = self
            .initiators
            .keys()
            .filter(|(p, _)| p == peer)
            .copied()
            .collect();
        for key in started {
            self.initiators.remove(&key);
            self.ended.push(Ended::Failed {
                peer: *peer,
                error: SyncError::Disconnected,
            });
        }
        self.responders.retain(|(p, _), _| p != peer);
        self.strangers.forget_peer(peer);
    }

    /// Whether a session this node started with `peer` is under way.
    pub fn is_initiating_with(&self, peer: &PeerId) -> bool {
        self.initiators.keys().any(|(p, _)| p == peer)
    }

    /// How many sessions this node started are under way (answered, waiting to be, or being
    /// retried until they time out).
    pub fn initiating(&self) -> usize {
        self.initiators.len()
    }

    /// The records held.
    pub fn replicas(&self) -> &BTreeMap<RecordId, Replica> {
        &self.replicas
    }

    /// Whether `record` waits for a person here to accept it (a provider's new patient).
    pub fn is_pending(&self, record: &RecordId) -> bool {
        self.intake.is_pending(record)
    }

    /// One held record, to read or change.
    pub fn replica_mut(&mut self, record: &RecordId) -> Option<&mut Replica> {
        // The caller may change its ledger.
        self.ledgers += 1;
        self.replicas.get_mut(record)
    }

    /// Adds a record this node now holds (one it created).
    pub fn insert(&mut self, replica: Replica) {
        self.ledgers += 1;
        self.replicas.insert(replica.id(), replica);
        self.count_pending();
    }

    /// Takes the sessions that ended since the last call.
    pub fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }

    /// Starts a session with `peer` for every held record whose ledger admits it, and for
    /// `probe`, a record not held, if given (a node that knows a record's id asks about it).
    /// `session` seeds the session ids (one per record, counting up). A record already in a
    /// session this node started with `peer` is skipped.
    pub fn start(
        &mut self,
        store: &dyn Store,
        age: &AgeIdentity,
        peer: PeerId,
        probe: Option<RecordId>,
        session: u64,
        now_ms: i64,
    ) -> Outbox {
        let mut records: Vec<RecordId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.admits(&peer, now_ms))
            .map(|(id, _)| *id)
            .collect();
        if let Some(probe) = probe.filter(|p| !self.replicas.contains_key(p)) {
            let stranger = self.intake.stranger(probe, self.me, self.pending());
            self.replicas.insert(probe, stranger);
            records.push(probe);
        }
        let out = self.open_sessions(store, age, peer, records, session, now_ms);
        // The probe's replica, if it is not held, is not kept: its session's later messages
        // make a fresh one, as for any record not held. (Nothing else here is not held.)
        if probe.is_some() {
            self.replicas.retain(|_, r| r.is_held());
        }
        out
    }

    /// Starts a session with `peer` for each of `records` that this node holds and whose
    /// ledger admits it (the records [`Engine::take_changed`] gave, say): what a change costs
    /// follows the records changed, not every record held. `session` as for [`Engine::start`].
    pub fn start_for(
        &mut self,
        store: &dyn Store,
        age: &AgeIdentity,
        peer: PeerId,
        records: &BTreeSet<RecordId>,
        session: u64,
        now_ms: i64,
    ) -> Outbox {
        let records: Vec<RecordId> = records
            .iter()
            .filter(|id| {
                self.replicas
                    .get(id)
                    .is_some_and(|r| r.is_held() && r.admits(&peer, now_ms))
            })
            .copied()
            .collect();
        self.open_sessions(store, age, peer, records, session, now_ms)
    }

    /// Opens an initiator session with `peer` for each of `records` (each in `replicas`), but
    /// those already in one this node started with `peer`.
    fn open_sessions(
        &mut self,
        store: &dyn Store,
        age: &AgeIdentity,
        peer: PeerId,
        records: Vec<RecordId>,
        session: u64,
        now_ms: i64,
    ) -> Outbox {
        let mut out = Vec::new();
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
                store,
                age,
                device: self.signer.as_ref(),
            };
            match InitiatorSession::start(&local, peer, session, now_ms) {
                Ok((initiator, bytes)) => {
                    self.initiators.insert((peer, session), initiator);
                    out.push((peer, bytes));
                }
                Err(error) => self.ended.push(Ended::Failed { peer, error }),
            }
        }
        out
    }

    /// Takes a message from `from`; returns the answer to send back, if any.
    pub fn receive(
        &mut self,
        store: &dyn Store,
        age: &AgeIdentity,
        from: PeerId,
        bytes: &[u8],
        now_ms: i64,
    ) -> Option<Vec<u8>> {
        let incoming = match Incoming::decode(bytes) {
            Ok(incoming) => incoming,
            Err(error) => {
                self.ended.push(Ended::Failed { peer: from, error });
                return None;
            }
        };
        match &incoming.message {
            Message::Response(response) => {
                let key = (from, response.session);
                self.on_response(store, age, key, incoming, now_ms)
            }
            Message::Request(request) => {
                let key = (from, request.session);
                self.on_request(store, age, key, incoming, now_ms)
            }
        }
    }

    fn on_response(
        &mut self,
        store: &dyn Store,
        age: &AgeIdentity,
        key: (PeerId, u64),
        incoming: Incoming,
        now_ms: i64,
    ) -> Option<Vec<u8>> {
        let pending = self.pending();
        let initiator = self.initiators.get_mut(&key)?;
        let record = initiator.record();
        let mut stranger = None;
        let replica = match self.replicas.get_mut(&record) {
            Some(replica) => replica,
            None => stranger.insert(self.intake.stranger(record, self.me, pending)),
        };
        let before = items_of(replica);
        let ops_before = replica.ledger().len();
        let mut local = Local {
            replica,
            store,
            age,
            device: self.signer.as_ref(),
        };
        let result = initiator.receive(&mut local, incoming, now_ms);
        let done = initiator.is_done();
        if items_of(local.replica) != before {
            self.taken_in += 1;
            note_changed(&mut self.changed, record, Some(key.0));
        }
        if local.replica.ledger().len() != ops_before {
            self.ledgers += 1;
        }
        // A record this node asked about and now holds (its ledger admits this node).
        if let Some(stranger) = stranger.filter(Replica::is_held) {
            self.hold(stranger);
        }
        match result {
            Ok(reply) => {
                if done {
                    let initiator = self.initiators.remove(&key).expect("found above");
                    self.ended.push(Ended::Synced {
                        peer: key.0,
                        record,
                        stats: initiator.stats().clone(),
                    });
                }
                reply
            }
            Err(error) => {
                self.initiators.remove(&key);
                self.ended.push(Ended::Failed { peer: key.0, error });
                None
            }
        }
    }

    fn on_request(
        &mut self,
        store: &dyn Store,
        age: &AgeIdentity,
        key: (PeerId, u64),
        incoming: Incoming,
        now_ms: i64,
    ) -> Option<Vec<u8>> {
        let (me, pending) = (self.me, self.pending());
        let record = match self.responders.get(&key) {
            Some(responder) => responder.record(),
            None => match opening(&incoming) {
                Ok((_, record)) => record,
                Err(error) => {
                    self.ended.push(Ended::Failed { peer: key.0, error });
                    return None;
                }
            },
        };
        let mut stranger = None;
        let replica = match self.replicas.get_mut(&record) {
            Some(replica) => replica,
            None => {
                let kept = self
                    .strangers
                    .remove(&key)
                    .unwrap_or_else(|| self.intake.stranger(record, me, pending));
                let stranger = stranger.insert(kept);
                self.intake.judge_stranger(stranger, pending);
                stranger
            }
        };
        let before = items_of(replica);
        let ops_before = replica.ledger().len();
        let mut local = Local {
            replica,
            store,
            age,
            device: self.signer.as_ref(),
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
        if items_of(local.replica) != before {
            self.taken_in += 1;
            note_changed(&mut self.changed, record, Some(key.0));
        }
        if local.replica.ledger().len() != ops_before {
            self.ledgers += 1;
        }
        // A record received for the first time is now held. One not held yet is kept for the
        // peer's next message only within the bounds; past them it is forgotten, and the next
        // message starts again from an empty replica (the answers are an empty replica's).
        if let Some(stranger) = stranger {
            if stranger.is_held() {
                if !self.replicas.contains_key(&stranger.id()) {
                    self.hold(stranger);
                }
            } else if self.room_for_stranger(key.0, &stranger) {
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
            Err(error) => {
                self.responders.remove(&key);
                self.strangers.remove(&key);
                self.ended.push(Ended::Failed { peer: key.0, error });
                None
            }
        }
    }

    /// Whether a replica of a record not held, for `peer`, fits beside the others kept.
    fn room_for_stranger(&self, peer: PeerId, stranger: &Replica) -> bool {
        let bytes = stranger.ledger().bytes();
        self.strangers.of_peer(&peer) < STRANGERS_PER_PEER_MAX
            && self.strangers.kept.len() < STRANGERS_MAX
            && bytes <= self.strangers.ledger_bytes_max
            && self.strangers.bytes + bytes <= self.strangers.bytes_max
    }

    /// Lowers the byte bounds of strangers' ledgers, one and all, so that a test can reach them
    /// with a few operations.
    #[cfg(test)]
    pub(crate) fn limit_strangers(&mut self, ledger_bytes_max: usize, bytes_max: usize) {
        self.strangers.ledger_bytes_max = ledger_bytes_max;
        self.strangers.bytes_max = bytes_max;
    }

    /// How many replicas of records not held are kept for peers' sessions, and the bytes of
    /// their ledgers.
    pub fn strangers(&self) -> (usize, usize) {
        (self.strangers.kept.len(), self.strangers.bytes)
    }

    /// Passes time: requests whose answer is overdue go again, sessions past their retries end,
    /// idle responder sessions are dropped.
    pub fn tick(&mut self, store: &dyn Store, age: &AgeIdentity, now_ms: i64) -> Outbox {
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for (key, initiator) in &mut self.initiators {
            let record = initiator.record();
            let mut empty = self.intake.stranger(record, self.me, 0);
            let replica = self.replicas.get_mut(&record).unwrap_or(&mut empty);
            let local = Local {
                replica,
                store,
                age,
                device: self.signer.as_ref(),
            };
            match initiator.poll(&local, now_ms) {
                Ok(Some(bytes)) => out.push((key.0, bytes)),
                Ok(None) => {}
                Err(error) => failed.push((*key, error)),
            }
        }
        for (key, error) in failed {
            self.initiators.remove(&key);
            self.ended.push(Ended::Failed { peer: key.0, error });
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
}

/// How many items (ledger operations and blobs) one replica holds: what a message may change.
fn items_of(replica: &Replica) -> usize {
    replica.ledger().len()
        + crate::section::Section::ALL
            .iter()
            .map(|section| replica.blob_ids(*section).count())
            .sum::<usize>()
}
