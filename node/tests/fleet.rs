//! A hostile fleet over real libp2p: while strangers push records of their own at a GP's node
//! and flood it with openings about records nobody holds, the patient's laptop keeps syncing
//! with it, and what the strangers make the GP hold stays within its bounds.

mod common;

use common::{Setup, WAIT, dial_and_sync, setup, start_listening, stop};
use libp2p::{
    Multiaddr, SwarmBuilder,
    futures::StreamExt,
    noise,
    request_response::{self, ProtocolSupport, cbor},
    swarm::SwarmEvent,
    tcp, yamux,
};
use phr_core::{
    Section,
    home::{Home, NewPatient, PENDING_RECORDS_MAX},
    keys::{AgeIdentity, PeerId, RecordId, random_array},
    ledger::Access,
    party::Party,
    replica::Replica,
    store::MemoryStore,
    sync::{Engine, InitiatorSession, Local},
};
use phr_node::{
    net::Node,
    swarm::{Frame, SYNC_PROTOCOL, SYNC_STREAMS_PER_CONNECTION_MAX},
};

/// Hostile clients at once (as many as the gate lets in from one address).
const FLEET: usize = 8;

/// Openings about unknown records each hostile client sends.
const OPENINGS: usize = 200;

/// A stranger with a record of its own that grants the GP: it syncs that record at the GP (an
/// unsolicited record), then floods it with openings about records nobody holds, keeping as
/// many in flight as the GP takes streams. Returns how many answers it got.
async fn hostile(dir: std::path::PathBuf, n: usize, addr: Multiaddr, gp: Party) -> usize {
    let new = NewPatient {
        name: format!("Not A Patient {n}"),
        nhs_number: None,
        birth_date: None,
        device_label: None,
    };
    let now = jiff::Timestamp::now();
    let (mut home, _) = Home::init_patient(&dir, &new, None, now).unwrap();
    home.grant(&gp, &[Section::Summary], Access::Read, None, None, now)
        .unwrap();
    let (vault, age) = home.sync_parts();
    let mut engine = Engine::open(vault, home.peer_id(), age).unwrap();
    let now_ms = now.as_millisecond();
    let mut pushes = engine.start(vault, age, gp.peer, None, 1 << 40, now_ms);

    let mut openings = openings(gp.peer).into_iter();

    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            cbor::Behaviour::<Frame, Frame>::new(
                [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .build();
    let gp_peer: libp2p::PeerId = gp.peer.to_string().parse().unwrap();
    swarm.dial(addr).unwrap();
    let mut answers = 0;
    let mut in_flight = 0;
    let _ = tokio::time::timeout(WAIT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {}
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => {
                    answers += 1;
                    in_flight -= 1;
                    let now_ms = jiff::Timestamp::now().as_millisecond();
                    if let Some(next) = engine.receive(vault, age, gp.peer, &response.0, now_ms) {
                        pushes.push((gp.peer, next));
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                    in_flight -= 1;
                }
                SwarmEvent::ConnectionClosed { .. } => break,
                _ => continue,
            }
            if in_flight == 0 && pushes.is_empty() && openings.len() == 0 {
                break;
            }
            // Its own record's session first, then the flood.
            while in_flight < SYNC_STREAMS_PER_CONNECTION_MAX {
                let Some(bytes) = pushes.pop().map(|(_, b)| b).or_else(|| openings.next()) else {
                    break;
                };
                swarm.behaviour_mut().sync_send(gp_peer, bytes);
                in_flight += 1;
            }
        }
    })
    .await;
    answers
}

/// Openings of sessions about records nobody holds, from a throwaway replica.
fn openings(gp: PeerId) -> Vec<Vec<u8>> {
    let store = MemoryStore::new();
    let throwaway = AgeIdentity::generate();
    let me: PeerId = phr_core::keys::SigningKey::generate().peer_id();
    let mut replica = Replica::empty(RecordId(random_array()), me);
    let local = Local {
        replica: &mut replica,
        store: &store,
        age: &throwaway,
    };
    (0..OPENINGS as u64)
        .map(|session| InitiatorSession::start(&local, gp, session, 0).unwrap().1)
        .collect()
}

/// `send_request` under a name that reads in the loop above.
trait SyncSend {
    fn sync_send(&mut self, peer: libp2p::PeerId, bytes: Vec<u8>);
}

impl SyncSend for cbor::Behaviour<Frame, Frame> {
    fn sync_send(&mut self, peer: libp2p::PeerId, bytes: Vec<u8>) {
        self.send_request(&peer, Frame(bytes));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_keeps_syncing_while_a_fleet_of_strangers_pushes_records_and_floods() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        laptop,
        gp,
        gp_party,
        record_id,
    } = setup(dir.path());
    gp.accept_patient(&record_id.to_string()).unwrap();
    let (gp_client, gp_task, gp_addr) = start_listening(gp, None).await;
    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let synced = dial_and_sync(&laptop_client, gp_addr.clone(), gp_party.peer).await;
    assert!(matches!(synced.as_slice(), [Ok(_)]), "{synced:?}");

    let fleet: Vec<_> = (0..FLEET)
        .map(|n| {
            let dir = dir.path().join(format!("hostile-{n}"));
            tokio::spawn(hostile(dir, n, gp_addr.clone(), gp_party.clone()))
        })
        .collect();
    // The patient syncs again and again while the fleet runs: every sync goes through.
    for round in 0..5 {
        let synced = tokio::time::timeout(WAIT, laptop_client.sync(gp_party.peer))
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(synced.as_slice(), [Ok((record, _))] if *record == record_id),
            "round {round}: {synced:?}"
        );
    }
    let mut answered = 0;
    for hostile in fleet {
        answered += hostile.await.unwrap();
    }
    stop(laptop_client, laptop_task).await;
    let gp = stop(gp_client, gp_task).await;

    // The fleet was served (it is not cut off for pushing within the limits), and what it made
    // the GP hold waits in the bounded room, none of it listed or readable.
    assert!(answered > 0);
    let waiting = gp.pending_records().unwrap();
    assert!(
        !waiting.is_empty() && waiting.len() <= PENDING_RECORDS_MAX,
        "{} records wait",
        waiting.len()
    );
    assert!(!waiting.contains(&record_id));
    let listed = gp.patients(jiff::Timestamp::now()).unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![record_id]
    );
}
