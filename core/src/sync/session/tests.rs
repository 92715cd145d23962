use automerge::ActorId;
use serde_json::json;

use super::*;
use crate::{
    RecordMeta, Stamp,
    keystore::Keystore,
    ledger::{Access, Ledger, OpBody},
    party::{Party, Role},
    record::Author,
    replica::Welcome,
    section::Section,
    store::MemoryStore,
    sync::{
        Ended, Engine,
        message::{Request, SYNC_MESSAGE_BYTES_MAX},
    },
    vault::Batch,
};

const T0: i64 = 1_763_700_000_000;

struct Node {
    keys: Keystore,
    store: MemoryStore,
    replica: Replica,
    role: Role,
    /// Whether its sessions get its device key, and so pack runs of its own writes.
    packs: bool,
    /// How many resources it wrote: each write is a millisecond after the one before.
    written: i64,
}

impl Node {
    fn patient() -> Node {
        let keys = Keystore::generate(true);
        let store = MemoryStore::new();
        let mut node = Node {
            replica: Replica::empty(RecordId([0; 16]), keys.device.peer_id()),
            keys,
            store,
            role: Role::Patient,
            packs: true,
            written: 0,
        };
        let ledger = Ledger::create(node.keys.root.as_ref().unwrap(), node.party(), T0).unwrap();
        let mut batch = Batch::new();
        for op in ledger.ops() {
            batch.ledger_op(ledger.record(), op);
        }
        node.store.commit(batch).unwrap();
        node.replica = Replica::open(
            &node.store,
            ledger.record(),
            node.keys.device.peer_id(),
            &node.keys.age,
        )
        .unwrap();
        node
    }

    /// A node that does not hold `record` yet.
    fn stranger(role: Role, record: RecordId) -> Node {
        let keys = Keystore::generate(false);
        Node {
            replica: Replica::empty(record, keys.device.peer_id()),
            keys,
            store: MemoryStore::new(),
            role,
            packs: true,
            written: 0,
        }
    }

    fn peer(&self) -> PeerId {
        self.keys.device.peer_id()
    }

    fn party(&self) -> Party {
        Party {
            peer: self.peer(),
            recipient: self.keys.age.recipient(),
            name: format!("{:?}", self.role),
            role: self.role,
            ods: None,
        }
    }

    fn local(&mut self) -> Local<'_> {
        Local {
            replica: &mut self.replica,
            store: &self.store,
            age: &self.keys.age,
            device: self.packs.then_some(&self.keys.device),
        }
    }

    fn grant(&mut self, to: &Node, sections: &[Section], access: Access) {
        let body = match to.role {
            Role::Patient => OpBody::AddDevice { device: to.party() },
            _ => OpBody::Grant {
                grantee: to.party(),
                sections: sections.to_vec(),
                access,
                expires_ms: None,
                purpose: None,
            },
        };
        let signer = match to.role {
            Role::Patient => self.keys.root.as_ref().unwrap(),
            _ => &self.keys.device,
        };
        self.replica
            .change_consent(&self.store, signer, &self.keys.device, body, T0)
            .unwrap();
    }

    /// The record as this node reads it, with the warnings of reading it.
    fn read(&mut self) -> (crate::Record, Vec<String>) {
        let meta = RecordMeta {
            id: self.replica.id().to_string(),
            subject: None,
            nhs_number: None,
        };
        self.replica
            .materialise(&self.store, meta, &ActorId::random(), &self.keys.age)
            .unwrap()
    }

    /// How many resources `section` of the record holds, as this node reads it.
    fn resources(&mut self, section: Section) -> usize {
        let (record, warnings) = self.read();
        assert!(warnings.is_empty(), "{warnings:?}");
        record.len(section)
    }

    /// Writes `n` resources to `section`, one blob each.
    fn write(&mut self, section: Section, n: usize) {
        let meta = RecordMeta {
            id: self.replica.id().to_string(),
            subject: None,
            nhs_number: None,
        };
        let mut actor = self.peer().public_key()[..16].to_vec();
        actor.extend([1; 8]);
        let (mut record, _) = self
            .replica
            .materialise(&self.store, meta, &ActorId::from(actor), &self.keys.age)
            .unwrap();
        let author = self.author();
        for i in 0..n {
            let at = T0 + self.written;
            self.written += 1;
            let stamp = Stamp {
                author: &author,
                time: jiff::Timestamp::from_millisecond(at).unwrap(),
            };
            let resource = json!({
                "resourceType": "Observation", "id": format!("{section}-{i}-{}", rand_tag()),
                "status": "final",
                "meta": {"tag": [{"system": crate::section::SECTION_TAG_SYSTEM, "code": section.as_str()}]},
                "code": {"text": "reading"}
            });
            record.put(stamp, &resource).unwrap();
            record.commit(stamp, "write");
            self.replica
                .save(&self.store, &self.keys.device, &mut record, at)
                .unwrap();
        }
    }

    fn author(&self) -> Author {
        Author {
            id: self.peer().to_string(),
            name: "test".into(),
        }
    }

    /// Logs `n` audit entries as a grantee logs its reads: sealed to the owners and stored.
    fn log(&mut self, n: usize) {
        let author = self.author();
        for i in 0..n {
            let stamp = Stamp {
                author: &author,
                time: jiff::Timestamp::from_millisecond(T0 + i as i64).unwrap(),
            };
            let event = json!({"resourceType": "AuditEvent", "id": format!("read-{}", rand_tag()),
                "recorded": "2025-11-21T00:00:00Z"});
            let actor = crate::audit::entry_actor(&self.peer());
            let (_, change) =
                crate::record::lone_change(stamp, &event, actor, "audit: show").unwrap();
            let blob = self
                .replica
                .seal_to_owners(&self.keys.device, &change, T0 + i as i64)
                .unwrap();
            self.replica.store_sealed(&self.store, vec![blob]).unwrap();
        }
    }

    fn blobs(&self, section: Section) -> BTreeSet<crate::keys::BlobId> {
        self.replica.blob_ids(section).collect()
    }
}

fn rand_tag() -> String {
    crate::keys::hex(&crate::keys::random_array::<4>())
}

/// `a` syncs with `b` until the session is done; returns the initiator's counts.
fn sync(a: &mut Node, b: &mut Node) -> Result<SessionStats, SyncError> {
    let (mut initiator, mut request) = InitiatorSession::start(&a.local(), b.peer(), 7, T0)?;
    let a_peer = a.peer();
    let (mut responder, mut response) =
        ResponderSession::open(&mut b.local(), a_peer, Incoming::decode(&request)?, T0)?;
    for _ in 0..100 {
        let Some(answer) = response else {
            return Ok(initiator.stats().clone());
        };
        request = initiator
            .receive(&mut a.local(), Incoming::decode(&answer)?, T0)?
            .expect("a fresh answer is acted on");
        response = responder.receive(&mut b.local(), Incoming::decode(&request)?, T0)?;
    }
    panic!("the session did not end");
}

#[test]
fn two_devices_converge_and_identical_ones_settle_in_one_round_trip() {
    let mut laptop = Node::patient();
    let mut phone = Node::stranger(Role::Patient, laptop.replica.id());
    laptop.grant(&phone, &[], Access::Read);
    laptop.write(Section::Clinical, 5);
    laptop.write(Section::Sensitive, 2);

    let stats = sync(&mut laptop, &mut phone).unwrap();
    assert!(phone.replica.is_held());
    assert_eq!(
        phone.blobs(Section::Clinical),
        laptop.blobs(Section::Clinical)
    );
    assert_eq!(
        phone.blobs(Section::Sensitive),
        laptop.blobs(Section::Sensitive)
    );
    assert!(stats.items_sent > 0);

    phone.write(Section::Journal, 3);
    sync(&mut laptop, &mut phone).unwrap();
    assert_eq!(
        laptop.blobs(Section::Journal),
        phone.blobs(Section::Journal)
    );
    // The phone's three writes the laptop lacked went as one run of them, which both now
    // hold in their place, and the laptop reads all three.
    assert_eq!(laptop.blobs(Section::Journal).len(), 1);
    assert_eq!(laptop.resources(Section::Journal), 3);

    let settled = sync(&mut phone, &mut laptop).unwrap();
    assert_eq!(settled.round_trips, 1);
    assert_eq!(settled.items_sent + settled.ingested.blobs, 0);
}

#[test]
fn a_grantee_gets_only_its_sections_and_a_relay_gets_ciphertext_but_no_keys() {
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    let mut pharmacy = Node::stranger(Role::Provider, id);
    let mut relay = Node::stranger(Role::Relay, id);
    laptop.grant(&pharmacy, &[Section::Summary], Access::Read);
    let relay_sections: Vec<Section> = Section::ALL
        .into_iter()
        .filter(|s| *s != Section::Audit)
        .collect();
    laptop.grant(&relay, &relay_sections, Access::Relay);
    laptop.write(Section::Summary, 2);
    laptop.write(Section::Clinical, 2);

    sync(&mut laptop, &mut pharmacy).unwrap();
    assert_eq!(pharmacy.blobs(Section::Summary).len(), 2);
    assert!(pharmacy.blobs(Section::Clinical).is_empty());
    // The pharmacy asking for itself gets no more.
    sync(&mut pharmacy, &mut laptop).unwrap();
    assert!(pharmacy.blobs(Section::Clinical).is_empty());

    sync(&mut laptop, &mut relay).unwrap();
    assert_eq!(
        relay.blobs(Section::Clinical),
        laptop.blobs(Section::Clinical)
    );
    assert!(relay.replica.keyring().is_empty());
}

#[test]
fn an_outsider_learns_nothing_not_even_whether_the_record_is_held() {
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    laptop.write(Section::Summary, 3);
    let mut outsider = Node::stranger(Role::Provider, id);
    let mut bystander = Node::stranger(Role::Provider, id);

    // The outsider knows the record id and asks both a node that holds it and one that does not.
    let (_, opening) = InitiatorSession::start(&outsider.local(), laptop.peer(), 9, T0).unwrap();
    let from = outsider.peer();
    let (_, holder) = ResponderSession::open(
        &mut laptop.local(),
        from,
        Incoming::decode(&opening).unwrap(),
        T0,
    )
    .unwrap();
    let (_, not_holder) = ResponderSession::open(
        &mut bystander.local(),
        from,
        Incoming::decode(&opening).unwrap(),
        T0,
    )
    .unwrap();
    assert_eq!(holder, not_holder, "the answers must not differ");

    sync(&mut outsider, &mut laptop).unwrap();
    assert!(!outsider.replica.is_held());
    assert!(outsider.replica.ledger().is_empty());
    assert!(outsider.store.records().unwrap().is_empty());
}

/// A session of `laptop` answering `phone`, one request in: returns the responder and the
/// initiator's next request.
fn half_open(laptop: &mut Node, phone: &mut Node) -> (ResponderSession, InitiatorSession, Vec<u8>) {
    let (mut initiator, request) =
        InitiatorSession::start(&phone.local(), laptop.peer(), 3, T0).unwrap();
    let from = phone.peer();
    let (responder, answer) = ResponderSession::open(
        &mut laptop.local(),
        from,
        Incoming::decode(&request).unwrap(),
        T0,
    )
    .unwrap();
    let next = initiator
        .receive(
            &mut phone.local(),
            Incoming::decode(&answer.unwrap()).unwrap(),
            T0,
        )
        .unwrap()
        .unwrap();
    (responder, initiator, next)
}

/// A patient's laptop that admitted their phone and tablet, which hold nothing yet.
fn laptop_phone_tablet() -> (Node, Node, Node) {
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    let phone = Node::stranger(Role::Patient, id);
    let tablet = Node::stranger(Role::Patient, id);
    laptop.grant(&phone, &[], Access::Read);
    laptop.grant(&tablet, &[], Access::Read);
    (laptop, phone, tablet)
}

#[test]
fn hostile_messages_end_the_session_with_a_typed_error_and_change_nothing() {
    let (mut laptop, mut phone, mut tablet) = laptop_phone_tablet();
    let id = laptop.replica.id();
    laptop.write(Section::Summary, 4);

    // Malformed and oversized bytes never reach a session.
    assert!(matches!(
        Incoming::decode(b"\xff\xff\xff garbage"),
        Err(SyncError::Malformed(_))
    ));
    let huge = vec![0u8; SYNC_MESSAGE_BYTES_MAX + 1];
    assert!(matches!(
        Incoming::decode(&huge),
        Err(SyncError::TooLarge { .. })
    ));
    let (_, opening) = InitiatorSession::start(&phone.local(), laptop.peer(), 1, T0).unwrap();
    let mut trailing = opening.clone();
    trailing.push(0);
    assert!(matches!(
        Incoming::decode(&trailing),
        Err(SyncError::Malformed(_))
    ));

    // An honest session with the tablet runs beside the hostile one and must not notice it.
    let (mut tablet_responder, mut tablet_initiator, tablet_next) =
        half_open(&mut laptop, &mut tablet);
    // Opening it, the laptop packed its four writes the tablet lacks into one run: an honest
    // session's doing. From here on, nothing the hostile messages do may be stored.
    assert_eq!(laptop.blobs(Section::Summary).len(), 1);
    let commits = laptop.store.commits();
    let ops = laptop.replica.ledger().len();

    let phone_peer = phone.peer();
    let (mut responder, _initiator, next) = half_open(&mut laptop, &mut phone);
    let decoded = |bytes: &[u8]| Incoming::decode(bytes).unwrap();

    // A request that skips ahead.
    let mut skipped: Request = match decoded(&next).message {
        Message::Request(r) => r,
        _ => unreachable!(),
    };
    skipped.seq = 5;
    let skipped = Message::Request(skipped).encode();
    let result = responder.receive(&mut laptop.local(), decoded(&skipped), T0);
    assert!(
        matches!(
            result,
            Err(SyncError::OutOfOrder {
                expected: 1,
                found: 5
            })
        ),
        "{result:?}"
    );

    // The opening request replayed after the next one was answered.
    let (mut responder, _initiator, next) = half_open(&mut laptop, &mut phone);
    let mut replayed: Request = match decoded(&opening).message {
        Message::Request(r) => r,
        _ => unreachable!(),
    };
    replayed.session = responder.id();
    let replayed = Message::Request(replayed).encode();
    responder
        .receive(&mut laptop.local(), decoded(&next), T0)
        .unwrap();
    let result = responder.receive(&mut laptop.local(), decoded(&replayed), T0);
    assert!(
        matches!(result, Err(SyncError::Replayed { .. })),
        "{result:?}"
    );

    // A forged blob pushed: one flipped byte in the ciphertext.
    let (mut responder, _initiator, next) = half_open(&mut laptop, &mut phone);
    let blob_id = laptop.blobs(Section::Summary).into_iter().next().unwrap();
    let mut forged = laptop
        .store
        .blob(&id, Section::Summary, &blob_id)
        .unwrap()
        .unwrap();
    let middle = forged.len() / 2;
    forged[middle] ^= 1;
    let mut pushed: Request = match decoded(&next).message {
        Message::Request(r) => r,
        _ => unreachable!(),
    };
    pushed.items = vec![(Topic::Section(Section::Summary), forged)];
    let pushed = Message::Request(pushed).encode();
    let result = responder.receive(&mut laptop.local(), decoded(&pushed), T0);
    assert!(
        matches!(
            result,
            Err(SyncError::Replica(
                crate::replica::ReplicaError::Refused { .. }
            ))
        ),
        "{result:?}"
    );

    // A response to the phone carrying an item it did not ask for.
    let (_, mut initiator, _) = half_open(&mut laptop, &mut phone);
    let unasked = Message::Response(Response {
        session: initiator.id(),
        seq: 1,
        reconcile: Vec::new(),
        items: vec![(
            Topic::Section(Section::Summary),
            laptop
                .store
                .blob(&id, Section::Summary, &blob_id)
                .unwrap()
                .unwrap(),
        )],
        stored: Vec::new(),
        newer: Vec::new(),
    })
    .encode();
    let result = initiator.receive(&mut phone.local(), decoded(&unasked), T0);
    assert!(
        matches!(result, Err(SyncError::Unrequested { .. })),
        "{result:?}"
    );

    // A message of another session, and a response sent to a responder.
    let (mut responder, _, next) = half_open(&mut laptop, &mut phone);
    let mut other: Request = match decoded(&next).message {
        Message::Request(r) => r,
        _ => unreachable!(),
    };
    other.session ^= 1;
    let other = Message::Request(other).encode();
    assert!(matches!(
        responder.receive(&mut laptop.local(), decoded(&other), T0),
        Err(SyncError::WrongSession { .. })
    ));
    assert!(matches!(
        responder.receive(&mut laptop.local(), decoded(&unasked), T0),
        Err(SyncError::WrongKind)
    ));
    let _ = phone_peer;

    // Nothing the laptop stored changed.
    assert_eq!(laptop.store.commits(), commits);
    assert_eq!(laptop.replica.ledger().len(), ops);

    // The tablet's session goes on to the end.
    let mut request = tablet_next;
    for _ in 0..50 {
        let Some(answer) = tablet_responder
            .receive(&mut laptop.local(), decoded(&request), T0)
            .unwrap()
        else {
            break;
        };
        request = tablet_initiator
            .receive(&mut tablet.local(), decoded(&answer), T0)
            .unwrap()
            .unwrap();
    }
    assert!(tablet_initiator.is_done());
    assert_eq!(
        tablet.blobs(Section::Summary),
        laptop.blobs(Section::Summary)
    );
}

#[test]
fn a_lost_answer_is_asked_for_again_and_a_repeat_is_not_acted_on_twice() {
    let mut laptop = Node::patient();
    let mut phone = Node::stranger(Role::Patient, laptop.replica.id());
    laptop.grant(&phone, &[], Access::Read);
    laptop.write(Section::Summary, 2);

    let (mut initiator, request) =
        InitiatorSession::start(&phone.local(), laptop.peer(), 5, T0).unwrap();
    let from = phone.peer();
    let (mut responder, answer) = ResponderSession::open(
        &mut laptop.local(),
        from,
        Incoming::decode(&request).unwrap(),
        T0,
    )
    .unwrap();
    let answer = answer.unwrap();
    // The answer is lost: nothing happens until the timeout, then the same request goes again.
    assert_eq!(
        initiator
            .poll(&phone.local(), T0 + RESPONSE_TIMEOUT_MS - 1)
            .unwrap(),
        None
    );
    let again = initiator
        .poll(&phone.local(), T0 + RESPONSE_TIMEOUT_MS)
        .unwrap()
        .unwrap();
    assert_eq!(again, request);
    // The responder answers the repeat the same way.
    let repeat = responder
        .receive(&mut laptop.local(), Incoming::decode(&again).unwrap(), T0)
        .unwrap()
        .unwrap();
    assert_eq!(repeat, answer);
    // Both copies arrive: the second is recognised and ignored.
    let next = initiator
        .receive(&mut phone.local(), Incoming::decode(&answer).unwrap(), T0)
        .unwrap();
    assert!(next.is_some());
    let ignored = initiator
        .receive(&mut phone.local(), Incoming::decode(&repeat).unwrap(), T0)
        .unwrap();
    assert_eq!(ignored, None);

    // With every answer lost, the session gives up after its retries.
    let (mut lonely, _) = InitiatorSession::start(&phone.local(), laptop.peer(), 6, T0).unwrap();
    let mut now = T0;
    let mut sent = 0;
    let result = loop {
        now += RESPONSE_TIMEOUT_MS;
        match lonely.poll(&phone.local(), now) {
            Ok(Some(_)) => sent += 1,
            Ok(None) => unreachable!("the timeout passed"),
            Err(e) => break e,
        }
    };
    assert!(matches!(result, SyncError::TimedOut));
    assert_eq!(sent, RETRIES_MAX);
}

#[test]
fn a_ledger_too_big_for_one_message_still_reaches_a_new_device() {
    use crate::sync::message::WANT_IDS_MAX;

    // A ledger of more operations than one request may ask for, whose last operation (it
    // follows all the others) admits the phone: the phone is admitted only by the whole of it.
    let laptop_keys = Keystore::generate(true);
    let phone = Node::stranger(Role::Patient, RecordId([0; 16]));
    let pharmacy = Node::stranger(Role::Provider, RecordId([0; 16]));
    let laptop_party = Party {
        peer: laptop_keys.device.peer_id(),
        recipient: laptop_keys.age.recipient(),
        name: "laptop".into(),
        role: Role::Patient,
        ods: None,
    };
    let root = laptop_keys.root.as_ref().unwrap();
    let mut ledger = Ledger::create(root, laptop_party, T0).unwrap();
    for i in 0..WANT_IDS_MAX + 10 {
        let grant = OpBody::Grant {
            grantee: pharmacy.party(),
            sections: vec![Section::Summary],
            access: Access::Read,
            expires_ms: None,
            purpose: Some(format!("refill {i}")),
        };
        ledger
            .append(&laptop_keys.device, grant, T0 + i as i64)
            .unwrap();
    }
    ledger
        .append(
            root,
            OpBody::AddDevice {
                device: phone.party(),
            },
            T0 + 100_000,
        )
        .unwrap();
    let store = MemoryStore::new();
    let mut batch = Batch::new();
    for op in ledger.ops() {
        batch.ledger_op(ledger.record(), op);
    }
    store.commit(batch).unwrap();
    let mut laptop = Node {
        replica: Replica::open(
            &store,
            ledger.record(),
            laptop_keys.device.peer_id(),
            &laptop_keys.age,
        )
        .unwrap(),
        keys: laptop_keys,
        store,
        role: Role::Patient,
        packs: true,
        written: 0,
    };
    let mut phone = Node {
        replica: Replica::empty(ledger.record(), phone.peer()),
        ..phone
    };

    let stats = sync(&mut phone, &mut laptop).unwrap();
    assert!(stats.round_trips >= 3, "{stats:?}");
    assert!(phone.replica.is_held());
    assert_eq!(phone.replica.ledger().len(), ledger.len());
    assert_eq!(phone.store.records().unwrap(), vec![ledger.record()]);
}

/// A peer that restarts loses its side of a session. Once the node hears the connection closed,
/// the session it started ends as `Disconnected` (not the peer's fault), and the next one with
/// the restarted peer runs to its end instead of being refused as out of order.
#[test]
fn a_session_cut_by_a_disconnection_ends_and_the_next_one_runs() {
    let mut laptop = Node::patient();
    let mut phone = Node::stranger(Role::Patient, laptop.replica.id());
    laptop.grant(&phone, &[], Access::Read);
    laptop.write(Section::Clinical, 2);
    let phone_peer = phone.keys.device.peer_id();
    let mut engine = Engine::open(
        &laptop.store,
        laptop.keys.device.peer_id(),
        &laptop.keys.age,
    )
    .unwrap();
    let opening = engine.start(
        &laptop.store,
        &laptop.keys.age,
        phone_peer,
        None,
        1 << 16,
        T0,
    );
    assert_eq!(opening.len(), 1);
    assert!(engine.is_initiating_with(&phone_peer));

    // The phone restarts before it answers: the connection closes.
    engine.disconnected(&phone_peer);
    assert!(!engine.is_initiating_with(&phone_peer));
    let ended = engine.take_ended();
    assert!(
        matches!(
            ended.as_slice(),
            [Ended::Failed {
                error: SyncError::Disconnected,
                ..
            }]
        ),
        "{ended:?}"
    );
    assert!(!SyncError::Disconnected.is_peers_fault());

    // A fresh session with the restarted phone (an engine that knows nothing) runs to its end.
    let mut phone_engine = Engine::open(&phone.store, phone_peer, &phone.keys.age).unwrap();
    let mut out = engine.start(
        &laptop.store,
        &laptop.keys.age,
        phone_peer,
        None,
        2 << 16,
        T0,
    );
    let laptop_peer = laptop.keys.device.peer_id();
    for _ in 0..16 {
        let Some((_, request)) = out.pop() else { break };
        // A closing request gets no answer.
        let Some(answer) =
            phone_engine.receive(&phone.store, &phone.keys.age, laptop_peer, &request, T0)
        else {
            break;
        };
        out = engine
            .receive(&laptop.store, &laptop.keys.age, phone_peer, &answer, T0)
            .map(|next| vec![(phone_peer, next)])
            .unwrap_or_default();
    }
    let ended = engine.take_ended();
    assert!(
        matches!(ended.as_slice(), [Ended::Synced { .. }]),
        "{ended:?}"
    );
    phone.replica = Replica::open(
        &phone.store,
        laptop.replica.id(),
        phone_peer,
        &phone.keys.age,
    )
    .unwrap();
    assert_eq!(
        phone.blobs(Section::Clinical),
        laptop.blobs(Section::Clinical)
    );
}

/// `n` revocations of the GP signed by `key`, naming `parents` (or, if `None`, an invented
/// parent each, so they wait for ever), as items a peer pushes.
fn junk_revokes(
    key: &crate::keys::SigningKey,
    id: RecordId,
    gp: PeerId,
    parents: Option<Vec<crate::keys::OpId>>,
    n: usize,
) -> Vec<(Topic, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let parents = parents
                .clone()
                .unwrap_or_else(|| vec![crate::keys::OpId(crate::keys::random_array())]);
            let op = crate::ledger::Op {
                record: id,
                parents,
                author: key.peer_id(),
                time_ms: T0 + i as i64,
                body: OpBody::Revoke {
                    target: crate::ledger::RevokeTarget::Party(gp),
                },
            };
            let op = crate::ledger::SignedOp::sign(op, key).unwrap();
            (Topic::Ledger, op.bytes().to_vec())
        })
        .collect()
}

/// Pushes `items` from `from` to `to` in a session of its own, as a hostile node would, in
/// messages of at most 1,000 items; every push must be taken without ending the session.
fn push(to: &mut Node, from: &mut Node, items: Vec<(Topic, Vec<u8>)>) {
    for chunk in items.chunks(1000) {
        let (mut responder, _, next) = half_open(to, from);
        let mut pushed: Request = match Incoming::decode(&next).unwrap().message {
            Message::Request(r) => r,
            _ => unreachable!(),
        };
        pushed.items = chunk.to_vec();
        let pushed = Incoming::decode(&Message::Request(pushed).encode()).unwrap();
        let result = responder.receive(&mut to.local(), pushed, T0);
        assert!(
            result.is_ok(),
            "an honest-looking push was refused: {result:?}"
        );
    }
}

#[test]
fn junk_ledger_operations_from_a_stranger_or_a_removed_device_are_not_kept_or_passed_on() {
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    let mut gp = Node::stranger(Role::Provider, id);
    let mut phone = Node::stranger(Role::Patient, id);
    laptop.grant(&gp, &[Section::Summary], Access::Read);
    laptop.grant(&phone, &[], Access::Read);
    sync(&mut gp, &mut laptop).unwrap();
    let before_removal = laptop.replica.ledger().heads();
    laptop
        .replica
        .change_consent(
            &laptop.store,
            laptop.keys.root.as_ref().unwrap(),
            &laptop.keys.device,
            OpBody::RemoveDevice {
                device: phone.peer(),
            },
            T0,
        )
        .unwrap();
    let honest = laptop.replica.ledger().len();

    // A key the record never admitted signs 10,000 revocations of the GP under the real heads
    // (enough to fill the ledger to its limit today), and the removed phone signs 5,000 that
    // are concurrent with its removal and 1,000 that name parents nobody has.
    let stranger = crate::keys::SigningKey::generate();
    let heads = laptop.replica.ledger().heads();
    let gp_peer = gp.peer();
    let mut attacker = Node::stranger(Role::Provider, id);
    push(
        &mut laptop,
        &mut attacker,
        junk_revokes(&stranger, id, gp_peer, Some(heads), 10_000),
    );
    let concurrent = junk_revokes(&phone.keys.device, id, gp_peer, Some(before_removal), 5_000);
    push(&mut laptop, &mut phone, concurrent);
    let waiting = junk_revokes(&phone.keys.device, id, gp_peer, None, 1_000);
    push(&mut laptop, &mut phone, waiting);

    // Nothing that can never count is kept.
    let ledger = laptop.replica.ledger();
    assert_eq!(ledger.len(), honest);
    assert_eq!(ledger.state().valid.len(), honest);
    assert!(ledger.state().can_read(&gp_peer, Section::Summary, T0));
    let stored = laptop.store.ledger_ops(&id).unwrap().len();
    assert_eq!(stored, ledger.len());

    // The patient can still grant and revoke, and the GP is sent nothing of the junk.
    let mut pharmacy = Node::stranger(Role::Provider, id);
    laptop.grant(&pharmacy, &[Section::Summary], Access::Read);
    laptop
        .replica
        .change_consent(
            &laptop.store,
            &laptop.keys.device,
            &laptop.keys.device,
            OpBody::Revoke {
                target: crate::ledger::RevokeTarget::Party(pharmacy.peer()),
            },
            T0,
        )
        .unwrap();
    sync(&mut gp, &mut laptop).unwrap();
    let at_gp = gp.replica.ledger();
    assert_eq!(at_gp.len(), laptop.replica.ledger().state().valid.len());
    assert_eq!(at_gp.state().valid, laptop.replica.ledger().state().valid);
    assert_eq!(at_gp.state().pending, 0);
    sync(&mut pharmacy, &mut laptop).unwrap();
    assert!(!pharmacy.replica.is_held());

    // A store written before this rule kept such junk: opening it deletes the junk.
    let heads = laptop.replica.ledger().heads();
    let mut batch = Batch::new();
    for (_, bytes) in junk_revokes(&stranger, id, gp_peer, Some(heads), 10) {
        let op = crate::ledger::SignedOp::decode(&bytes).unwrap();
        batch.ledger_op(id, &op);
    }
    laptop.store.commit(batch).unwrap();
    let reopened = Replica::open(&laptop.store, id, laptop.peer(), &laptop.keys.age).unwrap();
    assert_eq!(reopened.ledger().len(), laptop.replica.ledger().len());
    assert_eq!(
        laptop.store.ledger_ops(&id).unwrap().len(),
        reopened.ledger().len()
    );
}

/// Runs one session of `engine` (the laptop's) with `peer_engine` to its end, `engine` starting.
fn run_session(laptop: &Node, engine: &mut Engine, phone: &Node, phone_engine: &mut Engine) {
    let phone_peer = phone.peer();
    let mut out = engine.start(&laptop.store, &laptop.keys.age, phone_peer, None, 7, T0);
    for _ in 0..16 {
        let Some((_, request)) = out.pop() else { break };
        let Some(answer) =
            phone_engine.receive(&phone.store, &phone.keys.age, laptop.peer(), &request, T0)
        else {
            break;
        };
        out = engine
            .receive(&laptop.store, &laptop.keys.age, phone_peer, &answer, T0)
            .map(|next| vec![(phone_peer, next)])
            .unwrap_or_default();
    }
}

#[test]
fn a_patient_device_stores_no_record_but_the_one_it_joins() {
    // A stranger's record lists the phone as an owner device; the phone joins another record.
    let mut stranger = Node::patient();
    let phone = Node::stranger(Role::Patient, stranger.replica.id());
    stranger.grant(&phone, &[], Access::Read);
    stranger.write(Section::Summary, 1);
    let mut engine = Engine::open(&stranger.store, stranger.peer(), &stranger.keys.age).unwrap();
    let mut phone_engine = Engine::open(&phone.store, phone.peer(), &phone.keys.age).unwrap();
    phone_engine.set_welcome(Welcome::Only(RecordId([7; 16])));
    run_session(&stranger, &mut engine, &phone, &mut phone_engine);
    assert!(phone.store.records().unwrap().is_empty());
    assert!(phone_engine.replicas().is_empty());

    // Had it joined that record, the same session would have brought it.
    phone_engine.set_welcome(Welcome::Only(stranger.replica.id()));
    run_session(&stranger, &mut engine, &phone, &mut phone_engine);
    assert_eq!(phone.store.records().unwrap(), vec![stranger.replica.id()]);
}

#[test]
fn a_push_from_an_outsider_gets_the_same_answer_whether_or_not_the_record_is_held() {
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    laptop.write(Section::Summary, 1);
    let mut outsider = Node::stranger(Role::Provider, id);
    let mut bystander = Node::stranger(Role::Provider, id);

    // A well-signed blob of the record by the outsider's own key, under the real heads.
    let key = crate::keys::SectionKey::generate();
    let header = crate::blob::BlobHeader {
        record: id,
        section: Section::Summary,
        kind: crate::blob::BlobKind::Changes,
        epoch: 0,
        key_id: key.id(),
        author: outsider.peer(),
        time_ms: T0,
        ledger_heads: laptop.replica.ledger().heads(),
        replaces: Vec::new(),
        proofs: Vec::new(),
    };
    let blob = crate::blob::Blob::seal(header, &key, b"junk", &outsider.keys.device).unwrap();

    let (mut initiator, opening) =
        InitiatorSession::start(&outsider.local(), laptop.peer(), 9, T0).unwrap();
    let from = outsider.peer();
    let mut answers = Vec::new();
    let mut responders = Vec::new();
    for node in [&mut laptop, &mut bystander] {
        let (responder, answer) = ResponderSession::open(
            &mut node.local(),
            from,
            Incoming::decode(&opening).unwrap(),
            T0,
        )
        .unwrap();
        responders.push(responder);
        answers.push(answer.unwrap());
    }
    assert_eq!(answers[0], answers[1]);
    let next = initiator
        .receive(
            &mut outsider.local(),
            Incoming::decode(&answers[0]).unwrap(),
            T0,
        )
        .unwrap()
        .unwrap();
    let mut pushed: Request = match Incoming::decode(&next).unwrap().message {
        Message::Request(r) => r,
        _ => unreachable!(),
    };
    pushed.items = vec![(Topic::Section(Section::Summary), blob.bytes().to_vec())];
    let pushed = Message::Request(pushed).encode();
    let mut replies = Vec::new();
    for (responder, node) in responders.iter_mut().zip([&mut laptop, &mut bystander]) {
        let reply = responder.receive(&mut node.local(), Incoming::decode(&pushed).unwrap(), T0);
        replies.push(format!("{reply:?}"));
    }
    assert!(replies[0].starts_with("Ok("), "{}", replies[0]);
    assert_eq!(
        replies[0], replies[1],
        "the push must not tell the two apart"
    );
    assert!(!laptop.blobs(Section::Summary).contains(&blob.id()));
}

#[test]
fn a_node_stores_a_record_only_up_to_its_quota_and_a_compaction_makes_room() {
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    let mut relay = Node::stranger(Role::Relay, id);
    laptop.grant(&relay, &[Section::Clinical], Access::Relay);
    laptop.write(Section::Clinical, 10);
    let quota = laptop.replica.stored_bytes() * 4 / 10;
    relay.replica.set_quota(quota);

    sync(&mut laptop, &mut relay).unwrap();
    let stored = relay.blobs(Section::Clinical).len();
    assert!((1..10).contains(&stored), "{stored} of 10 stored");
    assert!(relay.replica.stored_bytes() <= quota);
    // Asked again, it stores no more: what is over the quota is not its to hold.
    sync(&mut laptop, &mut relay).unwrap();
    assert_eq!(relay.blobs(Section::Clinical).len(), stored);

    // The patient's device compacts the section: the compaction replaces what the relay
    // holds, so it fits, and the relay ends up holding the whole section in one blob.
    let meta = RecordMeta {
        id: id.to_string(),
        subject: None,
        nhs_number: None,
    };
    let mut actor = laptop.peer().public_key()[..16].to_vec();
    actor.extend([1; 8]);
    let (mut record, _) = laptop
        .replica
        .materialise(&laptop.store, meta, &ActorId::from(actor), &laptop.keys.age)
        .unwrap();
    let compaction = laptop
        .replica
        .compact_section(
            &laptop.store,
            &laptop.keys.device,
            &mut record,
            Section::Clinical,
            T0 + 100,
        )
        .unwrap();
    sync(&mut laptop, &mut relay).unwrap();
    assert_eq!(relay.blobs(Section::Clinical), BTreeSet::from([compaction]));
    assert!(relay.replica.stored_bytes() <= quota);
}

#[test]
fn a_node_keeps_a_bounded_number_of_strangers_sessions_per_peer_and_in_all() {
    use crate::sync::engine::{STRANGERS_MAX, STRANGERS_PER_PEER_MAX};
    let gp = Node::stranger(Role::Provider, RecordId([0; 16]));
    let mut engine = Engine::open(&gp.store, gp.peer(), &gp.keys.age).unwrap();
    // One hostile peer opens many sessions, each about a record of its own.
    let mut attacker = Node::patient();
    for session in 0..10 {
        let (_, opening) =
            InitiatorSession::start(&attacker.local(), gp.peer(), session, T0).unwrap();
        let answer = engine.receive(&gp.store, &gp.keys.age, attacker.peer(), &opening, T0);
        assert!(answer.is_some(), "every opening is answered");
    }
    assert_eq!(engine.strangers().0, STRANGERS_PER_PEER_MAX);
    // Many peers do the same.
    for _ in 0..(STRANGERS_MAX + 10) {
        let mut other = Node::patient();
        let (_, opening) = InitiatorSession::start(&other.local(), gp.peer(), 1, T0).unwrap();
        assert!(
            engine
                .receive(&gp.store, &gp.keys.age, other.peer(), &opening, T0)
                .is_some()
        );
    }
    assert_eq!(engine.strangers().0, STRANGERS_MAX);
    assert!(gp.store.records().unwrap().is_empty());
    // Unused, they go when their sessions idle out.
    engine.tick(&gp.store, &gp.keys.age, T0 + SESSION_IDLE_MS + 1);
    assert_eq!(engine.strangers().0, 0);
}

/// A stranger's request that pushes `attacker`'s whole ledger about its own record, made by
/// hand after a real opening: what anyone who can dial a node can send.
fn push_ledger(engine: &mut Engine, gp: &Node, attacker: &mut Node, session: u64) {
    let (mut initiator, opening) =
        InitiatorSession::start(&attacker.local(), gp.peer(), session, T0).unwrap();
    let answer = engine
        .receive(&gp.store, &gp.keys.age, attacker.peer(), &opening, T0)
        .expect("an opening is answered");
    let next = initiator
        .receive(
            &mut attacker.local(),
            Incoming::decode(&answer).unwrap(),
            T0,
        )
        .unwrap()
        .unwrap();
    let mut pushed: Request = match Incoming::decode(&next).unwrap().message {
        Message::Request(r) => r,
        _ => unreachable!(),
    };
    pushed.items = attacker
        .replica
        .ledger()
        .ops()
        .map(|op| (Topic::Ledger, op.bytes().to_vec()))
        .collect();
    pushed.close = false;
    let pushed = Message::Request(pushed).encode();
    engine.receive(&gp.store, &gp.keys.age, attacker.peer(), &pushed, T0);
}

#[test]
fn strangers_ledgers_are_kept_within_their_byte_bounds_one_and_all() {
    let gp = Node::stranger(Role::Provider, RecordId([0; 16]));
    let mut engine = Engine::open(&gp.store, gp.peer(), &gp.keys.age).unwrap();
    // A record with a few grants to parties that are not the GP: its ledger stays a stranger's.
    let attacker_with = |grants: usize| {
        let mut attacker = Node::patient();
        let id = attacker.replica.id();
        for _ in 0..grants {
            let other = Node::stranger(Role::Provider, id);
            attacker.grant(&other, &[Section::Summary], Access::Read);
        }
        attacker
    };
    let mut small = attacker_with(2);
    let small_bytes = small.replica.ledger().bytes();
    let mut large = attacker_with(12);
    let large_bytes = large.replica.ledger().bytes();
    let one_max = (small_bytes + large_bytes) / 2;
    assert!(small_bytes < one_max && one_max < large_bytes);
    engine.limit_strangers(one_max, 5 * small_bytes);
    // One stranger's ledger past the bound for one is not kept between its messages.
    push_ledger(&mut engine, &gp, &mut large, 1);
    assert_eq!(engine.strangers(), (0, 0));
    // Small ones are kept until together they would pass the bound for all.
    push_ledger(&mut engine, &gp, &mut small, 1);
    assert_eq!(engine.strangers(), (1, small_bytes));
    for session in 0..10 {
        let mut other = attacker_with(2);
        push_ledger(&mut engine, &gp, &mut other, session);
    }
    let (kept, bytes) = engine.strangers();
    assert!(bytes <= 5 * small_bytes, "{bytes} bytes kept");
    assert!((4..=5).contains(&kept), "{kept} kept");
    assert!(gp.store.records().unwrap().is_empty());
    // As they idle out, the count goes back to nothing.
    engine.tick(&gp.store, &gp.keys.age, T0 + SESSION_IDLE_MS + 1);
    assert_eq!(engine.strangers(), (0, 0));
}

#[test]
fn a_grantees_audit_entries_go_to_an_owner_once_and_then_leave_its_store() {
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    let mut gp = Node::stranger(Role::Provider, id);
    let mut relay = Node::stranger(Role::Relay, id);
    laptop.grant(&gp, &[Section::Summary], Access::Read);
    laptop.grant(&relay, &Section::ALL, Access::Relay);
    laptop.write(Section::Summary, 2);
    sync(&mut gp, &mut laptop).unwrap();
    sync(&mut relay, &mut laptop).unwrap();
    gp.log(5);
    let entries = gp.blobs(Section::Audit);
    assert_eq!(entries.len(), 5);

    // The relay holds every section as ciphertext and confirms what it stores, but it is not
    // an owner device: the GP keeps its entries.
    sync(&mut gp, &mut relay).unwrap();
    assert_eq!(relay.blobs(Section::Audit), entries);
    assert_eq!(
        gp.blobs(Section::Audit),
        entries,
        "dropped on a relay's word"
    );

    // Pushed to the patient's laptop, which confirms them: the GP drops its copies.
    let pushed = sync(&mut gp, &mut laptop).unwrap();
    assert_eq!(pushed.items_sent, 5);
    assert!(entries.is_subset(&laptop.blobs(Section::Audit)));
    assert!(gp.blobs(Section::Audit).is_empty());
    assert!(gp.store.blob_ids(&id, Section::Audit).is_empty());
    // ... and never sends them again.
    let again = sync(&mut gp, &mut laptop).unwrap();
    assert_eq!(again.items_sent, 0);
    assert_eq!(again.round_trips, 1);

    // The other way round: the laptop starts, asks for the GP's new entries, and confirms
    // them in its next request.
    gp.log(3);
    sync(&mut laptop, &mut gp).unwrap();
    assert_eq!(laptop.blobs(Section::Audit).len(), 8);
    assert!(gp.blobs(Section::Audit).is_empty());
    // The laptop keeps what it holds: an owner device drops nothing.
    sync(&mut laptop, &mut gp).unwrap();
    assert_eq!(laptop.blobs(Section::Audit).len(), 8);
}

#[test]
fn an_owner_cannot_make_a_grantee_drop_entries_it_was_not_sent() {
    // A hand-made answer confirms the GP's entries although the request carried none of
    // them: the GP drops nothing, since it keeps its entries until one it sent is confirmed.
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    let mut gp = Node::stranger(Role::Provider, id);
    laptop.grant(&gp, &[Section::Summary], Access::Read);
    sync(&mut gp, &mut laptop).unwrap();
    gp.log(2);
    let entries: Vec<[u8; 32]> = gp.blobs(Section::Audit).iter().map(|b| b.0).collect();
    let decoded = |bytes: &[u8]| Incoming::decode(bytes).unwrap();
    let (mut initiator, opening) =
        InitiatorSession::start(&gp.local(), laptop.peer(), 11, T0).unwrap();
    let gp_peer = gp.peer();
    let (_, answer) =
        ResponderSession::open(&mut laptop.local(), gp_peer, decoded(&opening), T0).unwrap();
    let mut answer = decoded(&answer.unwrap()).message;
    let Message::Response(response) = &mut answer else {
        panic!("a response");
    };
    response.stored = entries;
    initiator
        .receive(&mut gp.local(), decoded(&answer.encode()), T0)
        .unwrap();
    assert_eq!(gp.blobs(Section::Audit).len(), 2);
    assert_eq!(gp.store.blob_ids(&id, Section::Audit).len(), 2);
}

#[test]
fn the_admitted_peers_kept_between_messages_follow_every_ledger_change_and_every_expiry() {
    let mut laptop = Node::patient();
    let phone = Node::stranger(Role::Patient, laptop.replica.id());
    laptop.grant(&phone, &[], Access::Read);
    let mut engine = Engine::open(&laptop.store, laptop.peer(), &laptop.keys.age).unwrap();
    let mut phone_engine = Engine::open(&phone.store, phone.peer(), &phone.keys.age).unwrap();
    assert_eq!(engine.admitted_peers(T0), BTreeSet::from([phone.peer()]));
    run_session(&laptop, &mut engine, &phone, &mut phone_engine);
    assert_eq!(
        phone_engine.admitted_peers(T0),
        BTreeSet::from([laptop.peer()])
    );

    // A grant for an hour, made on the laptop: the phone learns it in a session, and both
    // stop admitting the pharmacy when the hour is up, with no ledger change in between.
    let pharmacy = Node::stranger(Role::Provider, laptop.replica.id());
    let hour = 3_600_000;
    let grant = OpBody::Grant {
        grantee: pharmacy.party(),
        sections: vec![Section::Summary],
        access: Access::Read,
        expires_ms: Some(T0 + hour),
        purpose: None,
    };
    engine
        .replica_mut(&laptop.replica.id())
        .unwrap()
        .change_consent(
            &laptop.store,
            &laptop.keys.device,
            &laptop.keys.device,
            grant,
            T0,
        )
        .unwrap();
    assert!(engine.admitted_peers(T0).contains(&pharmacy.peer()));
    let before = phone_engine.ledger_changes();
    run_session(&laptop, &mut engine, &phone, &mut phone_engine);
    assert_ne!(
        phone_engine.ledger_changes(),
        before,
        "a ledger change seen"
    );
    assert!(phone_engine.admitted_peers(T0).contains(&pharmacy.peer()));
    assert!(
        phone_engine
            .admitted_peers(T0 + hour - 1)
            .contains(&pharmacy.peer())
    );
    assert!(
        !phone_engine
            .admitted_peers(T0 + hour)
            .contains(&pharmacy.peer())
    );
    assert!(!engine.admitted_peers(T0 + hour).contains(&pharmacy.peer()));
    // Asked about an earlier time again (a clock set back), the answer is worked out again.
    assert!(engine.admitted_peers(T0).contains(&pharmacy.peer()));

    // A session that brings no ledger operation leaves the count alone.
    let before = phone_engine.ledger_changes();
    run_session(&laptop, &mut engine, &phone, &mut phone_engine);
    assert_eq!(phone_engine.ledger_changes(), before);
}

/// The writes a peer lacks go as one run compaction of them, which replaces them on the writer
/// and on every peer that holds them, once that peer has checked the run holds their changes.
#[test]
fn the_writes_a_peer_lacks_go_as_one_run_that_replaces_them_where_held() {
    let (mut laptop, mut phone, mut tablet) = laptop_phone_tablet();
    let id = laptop.replica.id();

    // Two writes reach both devices one blob each (the laptop packing nothing), then three
    // more reach the tablet only. (Five small writes stay below what the laptop compacts.)
    laptop.packs = false;
    laptop.write(Section::Clinical, 2);
    sync(&mut phone, &mut laptop).unwrap();
    laptop.write(Section::Clinical, 3);
    sync(&mut tablet, &mut laptop).unwrap();
    let loose = laptop.blobs(Section::Clinical);
    assert_eq!(loose.len(), 5);
    assert_eq!(tablet.blobs(Section::Clinical), loose);
    let three_bytes: usize = loose
        .difference(&phone.blobs(Section::Clinical))
        .map(|blob| {
            laptop
                .store
                .blob(&id, Section::Clinical, blob)
                .unwrap()
                .unwrap()
                .len()
        })
        .sum();

    // The phone lacks three: the laptop packs them into one run before listing them.
    laptop.packs = true;
    let stats = sync(&mut phone, &mut laptop).unwrap();
    let held = laptop.blobs(Section::Clinical);
    assert_eq!(held.len(), 3, "two writes and the run of three");
    assert_eq!(phone.blobs(Section::Clinical), held);
    assert_eq!(stats.ingested.blobs, 1);
    assert!(
        stats.bytes_received < three_bytes,
        "{} bytes received, the three blobs are {three_bytes}",
        stats.bytes_received
    );
    assert_eq!(phone.resources(Section::Clinical), 5);
    assert_eq!(laptop.resources(Section::Clinical), 5);

    // The tablet holds the three the run replaced: it checks the run holds their changes and
    // drops them for it.
    sync(&mut tablet, &mut laptop).unwrap();
    assert_eq!(tablet.blobs(Section::Clinical), held);
    assert_eq!(tablet.resources(Section::Clinical), 5);
    // Nothing left to send: one round trip.
    assert_eq!(sync(&mut tablet, &mut laptop).unwrap().round_trips, 1);
}

/// A compaction whose packed changes inflate past their bound (a few KiB that would take eight
/// MiB of memory at every load), by an owner device, is stored but never inflated past the
/// bound: the reader is told it cannot be read, and the rest of the record loads.
#[test]
fn a_packed_compaction_that_inflates_past_its_bound_is_refused_and_the_rest_loads() {
    use crate::blob::{Blob, BlobHeader, BlobKind};
    let mut laptop = Node::patient();
    let id = laptop.replica.id();
    let mut phone = Node::stranger(Role::Patient, id);
    laptop.grant(&phone, &[], Access::Read);
    laptop.packs = false;
    laptop.write(Section::Clinical, 2);

    let (epoch, key) = crate::consent::writing_key(
        laptop.replica.ledger(),
        laptop.replica.keyring(),
        Section::Clinical,
        T0,
    )
    .unwrap();
    let bomb = crate::changes::packed::pack(&vec![
            0;
            2 * crate::changes::packed::PACKED_INFLATED_BYTES_MAX
        ]);
    assert!(bomb.len() < 64 * 1024);
    let header = BlobHeader {
        record: id,
        section: Section::Clinical,
        kind: BlobKind::Compaction,
        epoch,
        key_id: key.id(),
        author: laptop.peer(),
        time_ms: T0,
        ledger_heads: laptop.replica.ledger().heads(),
        replaces: Vec::new(),
        proofs: Vec::new(),
    };
    let bomb = Blob::seal(header, key, &bomb, &laptop.keys.device).unwrap();
    let bomb_id = bomb.id();
    let error = bomb.open(key).unwrap_err();
    assert!(error.to_string().contains("more than 4 MiB"), "{error}");

    sync(&mut phone, &mut laptop).unwrap();
    phone
        .replica
        .ingest(
            &phone.store,
            &phone.keys.age,
            vec![(Topic::Section(Section::Clinical), bomb.bytes().to_vec())],
            T0,
        )
        .unwrap();
    let (record, warnings) = phone.read();
    assert_eq!(record.len(Section::Clinical), 2);
    assert!(
        warnings.iter().any(|w| w.contains("more than 4 MiB")),
        "{warnings:?}"
    );
    assert!(
        phone
            .replica
            .unreadable()
            .iter()
            .any(|(_, blob, _)| *blob == bomb_id)
    );
}

/// A node holding many records offers a change only where it belongs: the engine names the
/// records whose items changed (taken in from a peer, with that peer, or written by another
/// process), and a session started for them goes to a peer only for the records that admit it.
#[test]
fn the_records_that_changed_are_named_once_and_offered_only_to_the_peers_they_admit() {
    let mut ann = Node::patient();
    let mut bob = Node::patient();
    let mut gp = Node::stranger(Role::Provider, ann.replica.id());
    ann.grant(&gp, &[Section::Summary], Access::Write);
    bob.grant(&gp, &[Section::Summary], Access::Write);
    ann.write(Section::Summary, 1);
    bob.write(Section::Summary, 1);
    let mut ann_engine = Engine::open(&ann.store, ann.peer(), &ann.keys.age).unwrap();
    let mut bob_engine = Engine::open(&bob.store, bob.peer(), &bob.keys.age).unwrap();
    let mut gp_engine = Engine::open(&gp.store, gp.peer(), &gp.keys.age).unwrap();
    let (ann_id, bob_id) = (ann.replica.id(), bob.replica.id());
    run_session(&ann, &mut ann_engine, &gp, &mut gp_engine);
    run_session(&bob, &mut bob_engine, &gp, &mut gp_engine);
    assert_eq!(
        gp_engine.take_changed(),
        BTreeMap::from([(ann_id, Some(ann.peer())), (bob_id, Some(bob.peer()))]),
        "each record named with the peer its changes came from"
    );
    assert!(
        gp_engine.take_changed().is_empty(),
        "each change named once"
    );

    // A session that brings nothing names nothing.
    run_session(&ann, &mut ann_engine, &gp, &mut gp_engine);
    assert!(gp_engine.take_changed().is_empty());

    // Ann writes again: her own engine names her record as its own change; at the GP's, only
    // her record changed.
    ann_engine.take_changed();
    ann.write(Section::Summary, 1);
    ann_engine.refresh(&ann.store, &ann.keys.age).unwrap();
    assert_eq!(ann_engine.take_changed(), BTreeMap::from([(ann_id, None)]));
    run_session(&ann, &mut ann_engine, &gp, &mut gp_engine);
    let changed = gp_engine.take_changed();
    assert_eq!(changed, BTreeMap::from([(ann_id, Some(ann.peer()))]));
    // Offered to Ann's device, and not to Bob's, which her record does not admit.
    let changed: BTreeSet<RecordId> = changed.into_keys().collect();
    let to_bob = gp_engine.start_for(&gp.store, &gp.keys.age, bob.peer(), &changed, 100, T0);
    assert!(to_bob.is_empty());
    let to_ann = gp_engine.start_for(&gp.store, &gp.keys.age, ann.peer(), &changed, 200, T0);
    assert_eq!(to_ann.len(), 1);
    assert_eq!(to_ann[0].0, ann.peer());

    // The GP writes to Bob's record in another process (a `phr --patient` command): read
    // again, it is the one named, as the GP's own (Ann's, read again too as the engine stored
    // to it since, holds what it held).
    gp.replica = Replica::open(&gp.store, bob_id, gp.peer(), &gp.keys.age).unwrap();
    gp.write(Section::Summary, 1);
    gp_engine.refresh(&gp.store, &gp.keys.age).unwrap();
    assert_eq!(gp_engine.take_changed(), BTreeMap::from([(bob_id, None)]));
}

/// What a hostile peer can do with the newest-items listing. A responder that lists newer ids
/// in a later answer, or more than the limit, and an initiator that gives a time for a topic it
/// does not reconcile, or for a topic twice, end the session with a typed error and change
/// nothing. A responder listing an id it does not hold costs the initiator one request for it:
/// the session still ends, in step.
#[test]
fn hostile_newer_and_newest_lists_end_the_session_or_cost_one_request() {
    let (mut laptop, mut phone, _) = laptop_phone_tablet();
    laptop.write(Section::Summary, 2);
    let decoded = |bytes: &[u8]| Incoming::decode(bytes).unwrap();

    // Newer ids in an answer after the first.
    let (_, mut initiator, _) = half_open(&mut laptop, &mut phone);
    let late = Message::Response(Response {
        session: initiator.id(),
        seq: 1,
        reconcile: Vec::new(),
        items: Vec::new(),
        stored: Vec::new(),
        newer: vec![(Topic::Section(Section::Summary), vec![[7; 32]])],
    })
    .encode();
    let result = initiator.receive(&mut phone.local(), decoded(&late), T0);
    assert!(
        matches!(result, Err(SyncError::Malformed(ref m)) if m.contains("opening request")),
        "{result:?}"
    );

    // More newer ids than the limit: refused before a session sees them.
    let many = Message::Response(Response {
        session: 1,
        seq: 0,
        reconcile: Vec::new(),
        items: Vec::new(),
        stored: Vec::new(),
        newer: vec![(
            Topic::Section(Section::Summary),
            vec![[7; 32]; crate::sync::message::NEWER_IDS_MAX + 1],
        )],
    })
    .encode();
    assert!(matches!(
        Incoming::decode(&many),
        Err(SyncError::Malformed(_))
    ));

    // An opening request giving a time for a topic it does not reconcile, or one topic twice.
    let commits = laptop.store.commits();
    let (_, opening) = InitiatorSession::start(&phone.local(), laptop.peer(), 11, T0).unwrap();
    let Message::Request(mut request) = decoded(&opening).message else {
        unreachable!("an initiator sends requests")
    };
    request
        .reconcile
        .retain(|(topic, _)| *topic == Topic::Ledger);
    let stray = Message::Request(request.clone()).encode();
    let result = ResponderSession::open(&mut laptop.local(), phone.peer(), decoded(&stray), T0);
    assert!(
        matches!(result, Err(SyncError::Malformed(ref m)) if m.contains("not reconciled")),
        "{:?}",
        result.err()
    );
    request.newest = vec![(Topic::Ledger, None), (Topic::Ledger, Some(1))];
    let twice = Message::Request(request).encode();
    assert!(matches!(
        Incoming::decode(&twice),
        Err(SyncError::Malformed(_))
    ));
    assert_eq!(laptop.store.commits(), commits, "nothing stored");

    // An honest first answer with an id the responder does not hold added to its list: the
    // phone asks for it, gets nothing for it, and the session ends with the phone in step.
    let (mut initiator, opening) =
        InitiatorSession::start(&phone.local(), laptop.peer(), 13, T0).unwrap();
    let phone_peer = phone.peer();
    let (mut responder, answer) =
        ResponderSession::open(&mut laptop.local(), phone_peer, decoded(&opening), T0).unwrap();
    let Message::Response(mut first) = decoded(&answer.unwrap()).message else {
        unreachable!("a responder sends responses")
    };
    let fake = [7; 32];
    match first
        .newer
        .iter_mut()
        .find(|(topic, _)| *topic == Topic::Section(Section::Summary))
    {
        Some((_, ids)) => ids.push(fake),
        None => first
            .newer
            .push((Topic::Section(Section::Summary), vec![fake])),
    }
    let mut answer = Some(Message::Response(first).encode());
    let mut asked_for_fake = false;
    for _ in 0..16 {
        let Some(bytes) = answer else { break };
        let request = initiator
            .receive(&mut phone.local(), decoded(&bytes), T0)
            .unwrap()
            .unwrap();
        if let Message::Request(r) = decoded(&request).message {
            asked_for_fake |= r.want.iter().any(|(_, ids)| ids.contains(&fake));
        }
        answer = responder
            .receive(&mut laptop.local(), decoded(&request), T0)
            .unwrap();
    }
    assert!(asked_for_fake, "the listed id was asked for");
    assert!(initiator.is_done());
    assert_eq!(
        phone.blobs(Section::Summary),
        laptop.blobs(Section::Summary)
    );
}
