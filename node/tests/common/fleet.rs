//! A hostile client of the fleet test and benchmark: a stranger with a record of its own that
//! grants the GP, and a flood of openings about records nobody holds. Included by
//! `tests/fleet.rs` and `benches/fleet.rs`.

use std::time::Duration;

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
    home::{Home, NewPatient},
    keys::{AgeIdentity, PeerId, RecordId, random_array},
    ledger::Access,
    party::Party,
    replica::Replica,
    store::MemoryStore,
    sync::{Engine, InitiatorSession, Local},
};
use phr_node::swarm::{Frame, SYNC_PROTOCOL, SYNC_STREAMS_PER_CONNECTION_MAX};

/// Hostile clients at once (as many as the gate lets in from one address).
pub const FLEET: usize = 8;

/// The longest one hostile client runs.
const HOSTILE_WAIT: Duration = Duration::from_secs(60);

/// A stranger with a record of its own that grants the GP: it syncs that record at the GP (an
/// unsolicited record), then floods it with openings about records nobody holds, keeping as
/// many in flight as the GP takes streams, `flood` of them. Cut off, it comes back at once with
/// a new identity (PeerIds are free) and goes on with the openings left. Returns how many
/// answers it got and how many identities it used.
pub async fn hostile(
    dir: std::path::PathBuf,
    n: usize,
    addr: Multiaddr,
    gp: Party,
    flood: usize,
) -> (usize, usize) {
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

    let mut openings = openings(gp.peer, flood).into_iter();
    let gp_peer: libp2p::PeerId = gp.peer.to_string().parse().unwrap();
    let mut answers = 0;
    let mut identities = 0;
    let _ = tokio::time::timeout(HOSTILE_WAIT, async {
        while openings.len() > 0 || !pushes.is_empty() {
            identities += 1;
            let mut swarm = bare_client();
            swarm.dial(addr.clone()).unwrap();
            let mut in_flight = 0;
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
                        if let Some(next) = engine.receive(vault, age, gp.peer, &response.0, now_ms)
                        {
                            pushes.push((gp.peer, next));
                        }
                    }
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                        in_flight -= 1;
                    }
                    SwarmEvent::ConnectionClosed { .. }
                    | SwarmEvent::OutgoingConnectionError { .. } => break,
                    _ => continue,
                }
                if in_flight == 0 && pushes.is_empty() && openings.len() == 0 {
                    return;
                }
                // Its own record's session first, then the flood.
                while in_flight < SYNC_STREAMS_PER_CONNECTION_MAX {
                    let Some(bytes) = pushes.pop().map(|(_, b)| b).or_else(|| openings.next())
                    else {
                        break;
                    };
                    swarm.behaviour_mut().sync_send(gp_peer, bytes);
                    in_flight += 1;
                }
            }
            // Cut off, or refused at the door (the gate full from this address, the laptop's
            // first connection among them): back shortly as someone else.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    (answers, identities)
}

/// A bare libp2p client speaking only the sync protocol, with a new identity, that keeps its
/// connections open (only the node closes them).
pub fn bare_client() -> libp2p::Swarm<cbor::Behaviour<Frame, Frame>> {
    SwarmBuilder::with_new_identity()
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
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(300)))
        .build()
}

/// Openings of sessions (ids 0, 1, ...) about one record nobody holds, from a throwaway replica.
pub fn openings(gp: PeerId, flood: usize) -> Vec<Vec<u8>> {
    let store = MemoryStore::new();
    let throwaway = AgeIdentity::generate();
    let me: PeerId = phr_core::keys::SigningKey::generate().peer_id();
    let mut replica = Replica::empty(RecordId(random_array()), me);
    let local = Local {
        replica: &mut replica,
        store: &store,
        age: &throwaway,
        device: None,
    };
    (0..flood as u64)
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
