//! Sync sessions: the per-peer state machines that bring one record into step between two nodes.
//!
//! A session is one conversation about one record. The node that starts it is the
//! [`InitiatorSession`]; the other runs a [`ResponderSession`]. Strictly one message is in flight:
//! the initiator sends a [`Request`], the responder answers with a [`Response`] of the same
//! `seq`, and only then does the initiator send the next. See `docs/PROTOCOL.md` for the whole
//! protocol; in short:
//!
//! 1. The opening request carries a range-based reconciliation message ([`super::reconcile`]) for
//!    the ledger and for every section either side may hold. Each side puts into a topic only
//!    what its own ledger lets the other side have; a peer it does not admit sees empty sets.
//! 2. The responder answers every topic; the initiator goes on until each topic is settled. It
//!    then knows, per topic, which ids only it holds and which only the responder holds.
//! 3. It asks for what it lacks and may hold, and pushes what the responder lacks and may hold,
//!    ledger operations first, in bounded batches. Items come back only if asked for.
//! 4. When nothing is left it sends a closing request, which is not answered.
//!
//! Everything received goes through [`Replica::ingest`], which checks it and stores it durably.
//! Messages are checked against the protocol's limits first ([`Incoming::decode`]); an exact repeat
//! of the last message is recognised and answered the same (the network may duplicate); anything
//! else out of turn, malformed or refused ends the session with a [`SyncError`], and leaves what
//! was stored as it was. The initiator resends its last request when no answer comes in
//! [`RESPONSE_TIMEOUT_MS`], at most [`RETRIES_MAX`] times. Time is passed in; nothing here sleeps.
//!
//! # Example
//!
//! A patient's laptop creates a record and admits their phone; the phone, which holds nothing
//! yet, syncs with it. The loop is what a node runs, with the network in between.
//!
//! ```
//! use phr_core::{
//!     keystore::Keystore,
//!     ledger::{Ledger, OpBody},
//!     party::{Party, Role},
//!     replica::Replica,
//!     store::{MemoryStore, Store},
//!     sync::{Incoming, InitiatorSession, Local, ResponderSession},
//!     vault::Batch,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = 1_763_700_000_000;
//! let (laptop, phone) = (Keystore::generate(true), Keystore::generate(false));
//! let party = |keys: &Keystore, name: &str| Party {
//!     peer: keys.device.peer_id(),
//!     recipient: keys.age.recipient(),
//!     name: name.into(),
//!     role: Role::Patient,
//!     ods: None,
//! };
//! let root = laptop.root.as_ref().expect("the first device holds the root key");
//! let ledger = Ledger::create(root, party(&laptop, "laptop"), now)?;
//! let laptop_store = MemoryStore::new();
//! let mut batch = Batch::new();
//! for op in ledger.ops() {
//!     batch.ledger_op(ledger.record(), op);
//! }
//! laptop_store.commit(batch)?;
//! let record = ledger.record();
//! let mut on_laptop = Replica::open(&laptop_store, record, laptop.device.peer_id(), &laptop.age)?;
//! let admit = OpBody::AddDevice { device: party(&phone, "phone") };
//! on_laptop.change_consent(&laptop_store, root, &laptop.device, admit, now)?;
//!
//! let phone_store = MemoryStore::new();
//! let mut on_phone = Replica::empty(record, phone.device.peer_id());
//! let mut phone_side =
//!     Local { replica: &mut on_phone, store: &phone_store, age: &phone.age, device: Some(&phone.device) };
//! let mut laptop_side =
//!     Local { replica: &mut on_laptop, store: &laptop_store, age: &laptop.age, device: Some(&laptop.device) };
//!
//! let (mut initiator, request) =
//!     InitiatorSession::start(&phone_side, laptop.device.peer_id(), 1, now)?;
//! let (mut responder, mut answer) =
//!     ResponderSession::open(&mut laptop_side, phone.device.peer_id(), Incoming::decode(&request)?, now)?;
//! while let Some(bytes) = answer {
//!     let request = initiator
//!         .receive(&mut phone_side, Incoming::decode(&bytes)?, now)?
//!         .expect("a fresh answer is acted on");
//!     answer = responder.receive(&mut laptop_side, Incoming::decode(&request)?, now)?;
//! }
//! assert!(initiator.is_done());
//! assert!(on_phone.is_held());
//! assert_eq!(on_phone.ledger().len(), on_laptop.ledger().len());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    keys::{AgeIdentity, BlobId, PeerId, RecordId, SigningKey},
    replica::{Ingested, Replica, ReplicaError, Topic},
    section::Section,
    store::Store,
    sync::{
        message::{
            BATCH_BYTES_MAX, BATCH_ITEMS_MAX, Incoming, Message, NEWER_IDS_MAX, Request, Response,
            SyncError, WANT_IDS_MAX,
        },
        reconcile::{Id, Initiator, Item, ReconcileError, Responder},
    },
};

/// How long the initiator waits for an answer before it sends its request again.
pub const RESPONSE_TIMEOUT_MS: i64 = 10_000;

/// How many times the initiator sends a request again before it gives the session up.
pub const RETRIES_MAX: u32 = 3;

/// How long a responder keeps a session that hears nothing.
pub const SESSION_IDLE_MS: i64 = 60_000;

/// What a session needs of the node: the record's replica, the store, the node's age identity
/// (to unwrap keys sent to it) and, to pack its own small writes into one blob before it sends
/// them ([`Replica::form_run`]), its device key.
pub struct Local<'a> {
    /// The record.
    pub replica: &'a mut Replica,
    /// Where it is stored.
    pub store: &'a dyn Store,
    /// This node's age identity.
    pub age: &'a AgeIdentity,
    /// This node's device key: with it, an owner device packs the run of its own changes blobs
    /// a peer lacks into one compaction before listing them; without it, they go one by one.
    pub device: Option<&'a SigningKey>,
}

impl std::fmt::Debug for Local<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("record", &self.replica.id())
            .finish_non_exhaustive()
    }
}

/// Counts of one session, for logs and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes of the messages sent.
    pub bytes_sent: usize,
    /// Bytes of the messages received.
    pub bytes_received: usize,
    /// Responses received (the initiator) or requests answered (the responder).
    pub round_trips: usize,
    /// Items sent.
    pub items_sent: usize,
    /// What the received items did.
    pub ingested: Ingested,
}

impl SessionStats {
    fn add(&mut self, ingested: &Ingested) {
        let total = &mut self.ingested;
        total.ops += ingested.ops;
        total.blobs += ingested.blobs;
        total.duplicates += ingested.duplicates;
        total.buffered = ingested.buffered;
        total.unwanted += ingested.unwanted;
        total.overflowed += ingested.overflowed;
    }
}

/// The initiator's side of a session.
#[derive(Debug)]
pub struct InitiatorSession {
    session: u64,
    peer: PeerId,
    record: RecordId,
    seq: u32,
    /// Reconciliations still open.
    open: BTreeMap<Topic, Initiator>,
    /// The topics opened: the first answer may list newer ids of these only.
    opened: BTreeSet<Topic>,
    /// Ids to ask for, and ids to push, in topic order (the ledger first).
    want: BTreeSet<(Topic, Id)>,
    push: BTreeSet<(Topic, Id)>,
    /// Ids asked for in the request in flight.
    asked: BTreeSet<(Topic, Id)>,
    /// The audit entries pushed in the request in flight: the response may confirm them.
    pushed_audit: BTreeSet<Id>,
    /// The audit entries of the last response now held: confirmed in the next request.
    confirm: Vec<Id>,
    last_request: Vec<u8>,
    last_response: Option<[u8; 32]>,
    sent_ms: i64,
    retries: u32,
    done: bool,
    stats: SessionStats,
}

impl InitiatorSession {
    /// Starts a session with `peer` about `local`'s record; returns the opening request. The
    /// topics are the ledger and every section that either side may hold by this node's ledger;
    /// into each goes only what `peer` may have.
    pub fn start(
        local: &Local<'_>,
        peer: PeerId,
        session: u64,
        now_ms: i64,
    ) -> Result<(InitiatorSession, Vec<u8>), SyncError> {
        let replica = &*local.replica;
        let me = replica.me();
        let mut open = BTreeMap::new();
        let mut reconcile = Vec::new();
        let mut newest = Vec::new();
        for topic in Topic::all() {
            // A node that does not hold the record yet cannot tell which sections it will be
            // let hold: it asks about all of them and learns once the ledger arrives.
            let ours = match topic {
                Topic::Ledger => true,
                Topic::Section(section) => {
                    !replica.is_held() || replica.may_hold(&me, section, now_ms)
                }
            };
            let theirs = replica.may_send(&peer, topic, now_ms);
            if !ours && !theirs {
                continue;
            }
            let items = replica.offer(&peer, topic, now_ms);
            newest.push((topic, items.iter().map(|(time, _)| *time).max()));
            let (initiator, message) = Initiator::start_items(items)
                .map_err(|source| SyncError::Reconcile { topic, source })?;
            open.insert(topic, initiator);
            reconcile.push((topic, message));
        }
        let request = Request {
            session,
            seq: 0,
            record: replica.id(),
            reconcile,
            want: Vec::new(),
            items: Vec::new(),
            close: false,
            stored: Vec::new(),
            newest,
        };
        let mut this = InitiatorSession {
            session,
            peer,
            record: replica.id(),
            seq: 0,
            opened: open.keys().copied().collect(),
            open,
            want: BTreeSet::new(),
            push: BTreeSet::new(),
            asked: BTreeSet::new(),
            pushed_audit: BTreeSet::new(),
            confirm: Vec::new(),
            last_request: Vec::new(),
            last_response: None,
            sent_ms: now_ms,
            retries: 0,
            done: false,
            stats: SessionStats::default(),
        };
        let bytes = this.send(Message::Request(request), now_ms);
        Ok((this, bytes))
    }

    /// The session's id.
    pub fn id(&self) -> u64 {
        self.session
    }

    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The record.
    pub fn record(&self) -> RecordId {
        self.record
    }

    /// Whether the session is over (the closing request was sent).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The session's counts so far.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    fn send(&mut self, message: Message, now_ms: i64) -> Vec<u8> {
        let bytes = message.encode();
        self.stats.bytes_sent += bytes.len();
        self.last_request = bytes.clone();
        self.sent_ms = now_ms;
        self.retries = 0;
        bytes
    }

    /// Takes the responder's answer; returns the next request (the closing one when the record
    /// is in step, after which the session is done), or `None` for an exact repeat of the last
    /// answer, which is not acted on twice.
    pub fn receive(
        &mut self,
        local: &mut Local<'_>,
        incoming: Incoming,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, SyncError> {
        if self.done {
            return Err(SyncError::Finished);
        }
        let Message::Response(response) = incoming.message else {
            return Err(SyncError::WrongKind);
        };
        if response.session != self.session {
            return Err(SyncError::WrongSession {
                expected: self.session,
                found: response.session,
            });
        }
        if response.seq != self.seq {
            let repeat = self.seq > 0
                && response.seq == self.seq - 1
                && self.last_response == Some(incoming.digest);
            return match () {
                () if repeat => Ok(None),
                () if response.seq < self.seq => Err(SyncError::Replayed {
                    last: self.seq,
                    found: response.seq,
                }),
                () => Err(SyncError::OutOfOrder {
                    expected: self.seq,
                    found: response.seq,
                }),
            };
        }
        self.stats.bytes_received += incoming.bytes;
        self.stats.round_trips += 1;
        self.last_response = Some(incoming.digest);

        let reconcile = self.reconcile(local, response.reconcile, now_ms)?;
        self.take_newer(response.seq, response.newer)?;
        self.take_items(local, response.items, now_ms)?;
        let pushed = std::mem::take(&mut self.pushed_audit);
        let confirmed = confirmed_of(&pushed, &response.stored);
        local
            .replica
            .delivered(local.store, &self.peer, &confirmed)?;
        let request = self.next_request(local, reconcile, now_ms)?;
        let close = request.close;
        let bytes = self.send(Message::Request(request), now_ms);
        self.done = close;
        Ok(Some(bytes))
    }

    /// Feeds the answers to the open reconciliations; returns the next message of each topic
    /// still open. Settled topics queue their differences.
    fn reconcile(
        &mut self,
        local: &Local<'_>,
        answers: Vec<(Topic, Vec<u8>)>,
        now_ms: i64,
    ) -> Result<Vec<(Topic, Vec<u8>)>, SyncError> {
        let replica = &*local.replica;
        let answered: BTreeSet<Topic> = answers.iter().map(|(topic, _)| *topic).collect();
        if answered != self.open.keys().copied().collect() {
            return Err(SyncError::Malformed(
                "the answer does not settle exactly the topics asked".into(),
            ));
        }
        let mut next = Vec::new();
        for (topic, answer) in answers {
            let initiator = self.open.get_mut(&topic).expect("checked above");
            let settled = match initiator.receive(&answer) {
                Ok(next) => next,
                // Past the round limit (tens of thousands of ids apart) what was found is true:
                // fetch and push that, and the next session finds the rest.
                Err(ReconcileError::TooManyRounds { .. }) => None,
                Err(source) => return Err(SyncError::Reconcile { topic, source }),
            };
            match settled {
                Some(message) => next.push((topic, message)),
                None => {
                    // What this node may hold is judged when it asks (see `next_request`).
                    let initiator = self.open.remove(&topic).expect("checked above");
                    self.want
                        .extend(initiator.need().iter().map(|id| (topic, *id)));
                    if replica.may_send(&self.peer, topic, now_ms) {
                        self.push
                            .extend(initiator.have().iter().map(|id| (topic, *id)));
                    }
                }
            }
        }
        Ok(next)
    }

    /// Takes the ids the first answer lists as newer than anything this node reconciled: they
    /// are asked for like those reconciliation finds.
    fn take_newer(&mut self, seq: u32, newer: Vec<(Topic, Vec<Id>)>) -> Result<(), SyncError> {
        if newer.is_empty() {
            return Ok(());
        }
        if seq != 0 {
            return Err(SyncError::Malformed(
                "only the answer to the opening request lists newer ids".into(),
            ));
        }
        for (topic, ids) in newer {
            if !self.opened.contains(&topic) {
                return Err(SyncError::Malformed(format!(
                    "newer {topic} ids listed, a topic not opened"
                )));
            }
            self.want.extend(ids.into_iter().map(|id| (topic, id)));
        }
        Ok(())
    }

    /// Takes the items of an answer: every one must have been asked for.
    fn take_items(
        &mut self,
        local: &mut Local<'_>,
        items: Vec<(Topic, Vec<u8>)>,
        now_ms: i64,
    ) -> Result<(), SyncError> {
        let asked = std::mem::take(&mut self.asked);
        let mut got = BTreeSet::new();
        for (topic, bytes) in &items {
            // Blob ids and ledger operation ids are both the SHA-256 of the item's bytes.
            let id = crate::keys::sha256(&[bytes]);
            if !asked.contains(&(*topic, id)) {
                return Err(SyncError::Unrequested { topic: *topic });
            }
            got.insert((*topic, id));
        }
        if !items.is_empty() {
            let audit = audit_ids(&items);
            let ingested = local
                .replica
                .ingest(local.store, local.age, items, now_ms)?;
            self.stats.add(&ingested);
            // What did not fit in this batch is asked for again; what never comes is dropped.
            self.want.extend(asked.difference(&got).copied());
            self.confirm = held_of(local, audit)?;
        }
        Ok(())
    }

    fn next_request(
        &mut self,
        local: &Local<'_>,
        reconcile: Vec<(Topic, Vec<u8>)>,
        now_ms: i64,
    ) -> Result<Request, SyncError> {
        let me = local.replica.me();
        let mut want: BTreeMap<Topic, Vec<Id>> = BTreeMap::new();
        let mut later = Vec::new();
        while self.asked.len() < WANT_IDS_MAX {
            let Some((topic, id)) = self.want.pop_first() else {
                break;
            };
            if local.replica.has(local.store, topic, &id)? {
                continue;
            }
            let ours = match topic {
                Topic::Ledger => true,
                Topic::Section(section) => local.replica.may_hold(&me, section, now_ms),
            };
            if ours {
                self.asked.insert((topic, id));
                want.entry(topic).or_default().push(id);
            } else if want.contains_key(&Topic::Ledger) {
                // The ledger operations asked for now may let this node hold it: ask then.
                later.push((topic, id));
            }
        }
        self.want.extend(later);
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut share = None;
        while let Some((topic, id)) = self.push.first().copied() {
            // Consent may have changed since the topic settled (a revocation received in this
            // very session): judge every item when it is sent.
            if !local
                .replica
                .may_send_item(&self.peer, topic, &id, &mut share, now_ms)
            {
                self.push.pop_first();
                continue;
            }
            let Some(item) = local.replica.item(local.store, topic, &id)? else {
                // Replaced by a compaction since: the compaction is pushed instead.
                self.push.pop_first();
                continue;
            };
            if !items.is_empty()
                && (bytes + item.len() > BATCH_BYTES_MAX || items.len() >= BATCH_ITEMS_MAX)
            {
                break;
            }
            self.push.pop_first();
            bytes += item.len();
            items.push((topic, item));
        }
        self.stats.items_sent += items.len();
        let close = reconcile.is_empty() && want.is_empty() && items.is_empty();
        self.seq += 1;
        self.pushed_audit = audit_ids(&items).into_iter().collect();
        Ok(Request {
            session: self.session,
            seq: self.seq,
            record: self.record,
            reconcile,
            want: want.into_iter().collect(),
            items,
            close,
            stored: std::mem::take(&mut self.confirm),
            newest: Vec::new(),
        })
    }

    /// Passes time: returns the last request again if its answer is overdue, or
    /// [`SyncError::TimedOut`] once the retries are spent.
    ///
    /// The request is judged again before it goes: an item the peer may no longer have (consent
    /// changed meanwhile) is left out.
    pub fn poll(&mut self, local: &Local<'_>, now_ms: i64) -> Result<Option<Vec<u8>>, SyncError> {
        if self.done || now_ms - self.sent_ms < RESPONSE_TIMEOUT_MS {
            return Ok(None);
        }
        if self.retries >= RETRIES_MAX {
            return Err(SyncError::TimedOut);
        }
        self.retries += 1;
        self.sent_ms = now_ms;
        if let Some(fewer) = still_sendable(local, &self.peer, &self.last_request, now_ms) {
            self.last_request = fewer;
        }
        self.stats.bytes_sent += self.last_request.len();
        Ok(Some(self.last_request.clone()))
    }
}

/// The responder's side of a session.
#[derive(Debug)]
pub struct ResponderSession {
    session: u64,
    peer: PeerId,
    record: RecordId,
    /// The last request taken, its digest, and the answer sent.
    seq: u32,
    last_request: [u8; 32],
    last_response: Vec<u8>,
    topics: BTreeMap<Topic, Responder>,
    /// The ids listed in the first answer as newer than the initiator's latest, per topic.
    newer: Vec<(Topic, Vec<Id>)>,
    /// The audit entries served in the last answer: the next request may confirm them.
    served_audit: BTreeSet<Id>,
    heard_ms: i64,
    closed: bool,
    stats: SessionStats,
}

/// The session and record an incoming opening request is about, for the node to find (or make)
/// the replica before [`ResponderSession::open`].
pub fn opening(incoming: &Incoming) -> Result<(u64, RecordId), SyncError> {
    match &incoming.message {
        Message::Request(request) if request.seq == 0 => Ok((request.session, request.record)),
        Message::Request(request) => Err(SyncError::OutOfOrder {
            expected: 0,
            found: request.seq,
        }),
        Message::Response(_) => Err(SyncError::WrongKind),
    }
}

impl ResponderSession {
    /// Answers an opening request from `peer`. Each topic is reconciled against what `peer` may
    /// have by this node's ledger: an empty set if it may have nothing, so a peer the ledger does
    /// not admit learns nothing, not even whether this node holds the record. A record this node
    /// does not hold is answered from an empty replica ([`Replica::empty`]).
    pub fn open(
        local: &mut Local<'_>,
        peer: PeerId,
        incoming: Incoming,
        now_ms: i64,
    ) -> Result<(ResponderSession, Option<Vec<u8>>), SyncError> {
        let (session, record) = opening(&incoming)?;
        if record != local.replica.id() {
            return Err(SyncError::WrongRecord);
        }
        let Message::Request(request) = &incoming.message else {
            unreachable!("opening() checked the kind");
        };
        if !request.items.is_empty() || !request.want.is_empty() || !request.stored.is_empty() {
            return Err(SyncError::Malformed(
                "an opening request carries only reconciliation".into(),
            ));
        }
        let newest: BTreeMap<Topic, Option<u64>> = request.newest.iter().copied().collect();
        if newest
            .keys()
            .any(|topic| !request.reconcile.iter().any(|(t, _)| t == topic))
        {
            return Err(SyncError::Malformed(
                "the latest time of a topic not reconciled".into(),
            ));
        }
        let mut topics = BTreeMap::new();
        let mut listed = Vec::new();
        for (topic, _) in &request.reconcile {
            let items = local.replica.offer(&peer, *topic, now_ms);
            let (items, newer) = match newest.get(topic) {
                Some(latest) => split_newer(local, *topic, items, *latest, &peer, now_ms)?,
                None => (items, Vec::new()),
            };
            if !newer.is_empty() {
                listed.push((*topic, newer));
            }
            let responder =
                Responder::with_items(items).map_err(|source| SyncError::Reconcile {
                    topic: *topic,
                    source,
                })?;
            topics.insert(*topic, responder);
        }
        let mut this = ResponderSession {
            session,
            peer,
            record,
            seq: 0,
            last_request: [0; 32],
            last_response: Vec::new(),
            topics,
            newer: listed,
            served_audit: BTreeSet::new(),
            heard_ms: now_ms,
            closed: false,
            stats: SessionStats::default(),
        };
        let answer = this.answer(local, incoming, now_ms)?;
        Ok((this, answer))
    }

    /// The session's id.
    pub fn id(&self) -> u64 {
        self.session
    }

    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The record.
    pub fn record(&self) -> RecordId {
        self.record
    }

    /// Whether the initiator closed the session.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the session heard nothing for [`SESSION_IDLE_MS`]: drop it.
    pub fn is_idle(&self, now_ms: i64) -> bool {
        now_ms - self.heard_ms >= SESSION_IDLE_MS
    }

    /// The session's counts so far.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Takes the initiator's next request; returns the answer, or `None` after the closing
    /// request. An exact repeat of the last request gets the same answer again.
    pub fn receive(
        &mut self,
        local: &mut Local<'_>,
        incoming: Incoming,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, SyncError> {
        if self.closed {
            return Err(SyncError::Finished);
        }
        let Message::Request(request) = &incoming.message else {
            return Err(SyncError::WrongKind);
        };
        if request.session != self.session {
            return Err(SyncError::WrongSession {
                expected: self.session,
                found: request.session,
            });
        }
        if request.record != self.record {
            return Err(SyncError::WrongRecord);
        }
        if request.seq == self.seq && incoming.digest == self.last_request {
            self.heard_ms = now_ms;
            if let Some(fewer) = still_sendable(local, &self.peer, &self.last_response, now_ms) {
                self.last_response = fewer;
            }
            self.stats.bytes_sent += self.last_response.len();
            return Ok(Some(self.last_response.clone()));
        }
        if request.seq <= self.seq {
            return Err(SyncError::Replayed {
                last: self.seq,
                found: request.seq,
            });
        }
        if request.seq != self.seq + 1 {
            return Err(SyncError::OutOfOrder {
                expected: self.seq + 1,
                found: request.seq,
            });
        }
        self.answer(local, incoming, now_ms)
    }

    fn answer(
        &mut self,
        local: &mut Local<'_>,
        incoming: Incoming,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, SyncError> {
        let Message::Request(request) = incoming.message else {
            return Err(SyncError::WrongKind);
        };
        self.heard_ms = now_ms;
        self.stats.bytes_received += incoming.bytes;

        let mut reconcile = Vec::with_capacity(request.reconcile.len());
        for (topic, message) in &request.reconcile {
            let responder = self
                .topics
                .get_mut(topic)
                .ok_or_else(|| SyncError::Malformed(format!("topic {topic} was not opened")))?;
            let answer = responder
                .answer(message)
                .map_err(|source| SyncError::Reconcile {
                    topic: *topic,
                    source,
                })?;
            reconcile.push((*topic, answer));
        }
        let served = std::mem::take(&mut self.served_audit);
        local.replica.delivered(
            local.store,
            &self.peer,
            &confirmed_of(&served, &request.stored),
        )?;
        let mut stored = Vec::new();
        if !request.items.is_empty() {
            // To a peer the record does not admit, this node answers as one that does not hold
            // the record: such a node drops what this one would refuse, and blames nobody.
            let outsider = local.replica.is_held() && !local.replica.admits(&self.peer, now_ms);
            let audit = audit_ids(&request.items);
            match local
                .replica
                .ingest(local.store, local.age, request.items, now_ms)
            {
                Ok(ingested) => self.stats.add(&ingested),
                Err(ReplicaError::Refused { .. }) if outsider => {}
                Err(error) => return Err(error.into()),
            }
            stored = held_of(local, audit)?;
        }
        let items = self.serve(local, &request.want, now_ms)?;
        self.stats.items_sent += items.len();
        self.served_audit = audit_ids(&items).into_iter().collect();

        self.seq = request.seq;
        self.last_request = incoming.digest;
        if request.close {
            self.closed = true;
            self.last_response.clear();
            return Ok(None);
        }
        let response = Message::Response(Response {
            session: self.session,
            seq: request.seq,
            reconcile,
            items,
            stored,
            newer: std::mem::take(&mut self.newer),
        });
        let bytes = response.encode();
        self.stats.bytes_sent += bytes.len();
        self.stats.round_trips += 1;
        self.last_response = bytes.clone();
        Ok(Some(bytes))
    }

    /// The items asked for that this node holds and the peer may have, up to one batch.
    fn serve(
        &self,
        local: &Local<'_>,
        want: &[(Topic, Vec<Id>)],
        now_ms: i64,
    ) -> Result<Vec<(Topic, Vec<u8>)>, SyncError> {
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut share = None;
        for (topic, ids) in want {
            if !local.replica.may_send(&self.peer, *topic, now_ms) {
                continue;
            }
            for id in ids {
                if !local
                    .replica
                    .may_send_item(&self.peer, *topic, id, &mut share, now_ms)
                {
                    continue;
                }
                let Some(item) = local.replica.item(local.store, *topic, id)? else {
                    continue;
                };
                if !items.is_empty()
                    && (bytes + item.len() > BATCH_BYTES_MAX || items.len() >= BATCH_ITEMS_MAX)
                {
                    return Ok(items);
                }
                bytes += item.len();
                items.push((*topic, item));
            }
        }
        Ok(items)
    }
}

/// The most run compactions a responder forms for one topic of one session: up to 64 times
/// `RUN_BLOBS_MAX` changes blobs packed (a new device's first sync of a large record).
const RUNS_PER_SESSION_MAX: usize = 64;

/// Splits what the responder offers in a topic at the initiator's latest time: the items up to
/// it (reconciled), and the ids of those after it (listed outright), unless there are more of
/// those than [`NEWER_IDS_MAX`] (then everything is reconciled). Before listing, an owner
/// device packs the run of its own changes blobs among the later ones into one compaction
/// ([`Replica::form_run`]), so that the peer fetches one blob for them.
fn split_newer(
    local: &mut Local<'_>,
    topic: Topic,
    items: Vec<Item>,
    latest: Option<u64>,
    peer: &PeerId,
    now_ms: i64,
) -> Result<(Vec<Item>, Vec<Id>), SyncError> {
    let later = |(time, _): &Item| latest.is_none_or(|latest| *time > latest);
    let mut items = items;
    if let (Topic::Section(section), Some(device)) = (topic, local.device) {
        let ids: Vec<BlobId> = items
            .iter()
            .filter(|item| later(item))
            .map(|(_, id)| BlobId(*id))
            .collect();
        // One run takes at most `RUN_BLOBS_MAX` blobs: a device that lacks thousands (a new
        // one) gets several runs, each formed from what the last left.
        let mut formed = 0;
        while ids.len() >= crate::replica::RUN_BLOBS_MIN
            && formed < RUNS_PER_SESSION_MAX
            && local
                .replica
                .form_run(local.store, device, section, &ids, now_ms)?
                .is_some()
        {
            formed += 1;
        }
        if formed > 0 {
            items = local.replica.offer(peer, topic, now_ms);
        }
    }
    let (newer, older): (Vec<Item>, Vec<Item>) = items.into_iter().partition(later);
    if newer.len() > NEWER_IDS_MAX {
        let mut all = older;
        all.extend(newer);
        return Ok((all, Vec::new()));
    }
    Ok((older, newer.into_iter().map(|(_, id)| id).collect()))
}

/// The ids of the audit entries among `items` (an id is the SHA-256 of the item's bytes).
fn audit_ids(items: &[(Topic, Vec<u8>)]) -> Vec<Id> {
    items
        .iter()
        .filter(|(topic, _)| *topic == Topic::Section(Section::Audit))
        .map(|(_, bytes)| crate::keys::sha256(&[bytes]))
        .collect()
}

/// Of the audit entries `ids` just taken in, those this node now holds (stored durably, held
/// for the patient, or replaced by a compaction it holds): what it confirms to the sender.
fn held_of(local: &Local<'_>, ids: Vec<Id>) -> Result<Vec<Id>, SyncError> {
    let mut held = Vec::new();
    for id in ids {
        if local
            .replica
            .has(local.store, Topic::Section(Section::Audit), &id)?
        {
            held.push(id);
        }
    }
    Ok(held)
}

/// What the peer confirmed of the audit entries this node sent it in its last message: a
/// confirmation of anything else is ignored, so a peer cannot make a node drop entries it was
/// never sent.
fn confirmed_of(sent: &BTreeSet<Id>, stored: &[Id]) -> Vec<Id> {
    stored
        .iter()
        .filter(|id| sent.contains(*id))
        .copied()
        .collect()
}

/// A message sent before, with the items `peer` may no longer have left out; `None` if it may
/// still have them all. Consent can change between a message and its repeat.
fn still_sendable(local: &Local<'_>, peer: &PeerId, bytes: &[u8], now_ms: i64) -> Option<Vec<u8>> {
    let mut message = Incoming::decode(bytes).ok()?.message;
    let items = match &mut message {
        Message::Request(request) => &mut request.items,
        Message::Response(response) => &mut response.items,
    };
    let before = items.len();
    items.retain(|(topic, _)| local.replica.may_send(peer, *topic, now_ms));
    (items.len() != before).then(|| message.encode())
}

#[cfg(test)]
mod tests;
