//! A hostile peer that sends garbage, frames over the size limit or a flood of requests is
//! disconnected, and the node goes on serving others.

mod common;

use common::{
    Running, Setup, WAIT, assert_gp_reads_only_the_summary, dial_and_sync,
    fleet::{bare_client, openings},
    running_and_synced, setup, start_listening, stop,
};
use libp2p::{
    Multiaddr, SwarmBuilder,
    futures::StreamExt,
    noise,
    request_response::{self, ProtocolSupport, cbor},
    swarm::SwarmEvent,
    tcp, yamux,
};
use phr_core::{
    keys::{AgeIdentity, PeerId, RecordId, random_array},
    replica::Replica,
    store::MemoryStore,
    sync::{InitiatorSession, Local, message::SYNC_MESSAGE_BYTES_MAX},
};
use phr_node::{
    net::Node,
    swarm::{Frame, SYNC_PROTOCOL, SYNC_STREAMS_PER_CONNECTION_MAX},
};

/// Connects a bare libp2p client to the node at `addr`, sends it `requests` as soon as the
/// connection is up, and returns the peer that closed the connection.
async fn send_and_wait_for_disconnect(addr: Multiaddr, requests: Vec<Vec<u8>>) -> libp2p::PeerId {
    let mut hostile = big_client();
    hostile.dial(addr).unwrap();
    // As many in flight as the node takes streams on one connection; each answer (or refusal)
    // lets the next one go, as fast as the node answers.
    let mut requests = requests.into_iter();
    let mut node = None;
    tokio::time::timeout(WAIT, async {
        loop {
            let next = match hostile.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    node = Some(peer_id);
                    SYNC_STREAMS_PER_CONNECTION_MAX
                }
                SwarmEvent::Behaviour(
                    request_response::Event::Message { .. }
                    | request_response::Event::OutboundFailure { .. },
                ) => 1,
                SwarmEvent::ConnectionClosed { peer_id, .. } => break peer_id,
                _ => 0,
            };
            for request in requests.by_ref().take(next) {
                let peer = node.expect("connected");
                hostile.behaviour_mut().send_request(&peer, Frame(request));
            }
        }
    })
    .await
    .expect("the node disconnects the hostile peer")
}

/// A bare client whose codec lets it send far more than the node accepts.
fn big_client() -> libp2p::Swarm<cbor::Behaviour<Frame, Frame>> {
    let codec = cbor::codec::Codec::default()
        .set_request_size_maximum(4 * SYNC_MESSAGE_BYTES_MAX as u64)
        .set_response_size_maximum(4 * SYNC_MESSAGE_BYTES_MAX as u64);
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            cbor::Behaviour::<Frame, Frame>::with_codec(
                codec,
                [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                // A frame the node refuses unread stalls until the request times out.
                request_response::Config::default()
                    .with_request_timeout(std::time::Duration::from_secs(2)),
            )
        })
        .unwrap()
        // Keep the connection open on this side: only the node may close it.
        .with_swarm_config(|config| {
            config.with_idle_connection_timeout(std::time::Duration::from_secs(300))
        })
        .build()
}

/// A stranger's frame over the strangers' limit (but within the admitted peers') is refused
/// unread, and the stranger is not cut off for it: the opening it sends next is answered. (A
/// device whose record waits for acceptance may send such a frame honestly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_large_frame_is_refused_without_cutting_it_off() {
    use phr_node::admission::STRANGER_FRAME_BYTES_MAX;
    let dir = tempfile::tempdir().unwrap();
    let Setup { gp, gp_party, .. } = setup(dir.path());
    let (gp_client, gp_task, gp_addr) = start_listening(gp, None).await;
    let large = vec![0u8; STRANGER_FRAME_BYTES_MAX as usize + 1024];
    assert!(
        large.len() < SYNC_MESSAGE_BYTES_MAX,
        "an admitted peer's frame could be this large"
    );
    let opening = openings(gp_party.peer, 1).remove(0);

    let mut stranger = big_client();
    stranger.dial(gp_addr).unwrap();
    let (refused, answered) = tokio::time::timeout(WAIT, async {
        let mut large_request = None;
        let mut refused = false;
        loop {
            match stranger.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    large_request = Some(
                        stranger
                            .behaviour_mut()
                            .send_request(&peer_id, Frame(large.clone())),
                    );
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    peer,
                    ..
                }) if Some(request_id) == large_request => {
                    refused = true;
                    stranger
                        .behaviour_mut()
                        .send_request(&peer, Frame(opening.clone()));
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, .. },
                    ..
                }) => break (refused, Some(request_id) != large_request),
                SwarmEvent::ConnectionClosed { .. } => panic!("the node cut the stranger off"),
                _ => {}
            }
        }
    })
    .await
    .expect("the node refuses the large frame and answers the opening");
    assert!(refused, "the large frame was not refused");
    assert!(answered, "the node answered the large frame");
    stop(gp_client, gp_task).await;
}

/// Cuts off a hostile peer sending `requests`, then checks that an honest patient node is still
/// served and that the GP's home holds what it should.
async fn hostile_peer_is_cut_off(requests: impl FnOnce(PeerId) -> Vec<Vec<u8>>) {
    hostile_peer_is_cut_off_by(None, requests).await
}

/// The flood limit the flood test sets.
const FLOOD_LIMIT: u32 = 50;

async fn hostile_peer_is_cut_off_by(
    limit: Option<u32>,
    requests: impl FnOnce(PeerId) -> Vec<Vec<u8>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        laptop,
        gp,
        gp_party,
        record_id,
    } = setup(dir.path());
    let (gp_client, gp_task, gp_addr) = start_listening(gp, limit).await;
    let gp_peer: libp2p::PeerId = gp_party.peer.to_string().parse().unwrap();

    let closed = send_and_wait_for_disconnect(gp_addr.clone(), requests(gp_party.peer)).await;
    assert_eq!(closed, gp_peer);

    // An honest patient node is still served.
    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let synced = dial_and_sync(&laptop_client, gp_addr, gp_party.peer).await;
    assert!(
        matches!(synced.as_slice(), [Ok((record, _))] if *record == record_id),
        "{synced:?}"
    );

    stop(laptop_client, laptop_task).await;
    let gp = stop(gp_client, gp_task).await;
    assert_gp_reads_only_the_summary(&gp, record_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_is_disconnected_and_others_are_still_served() {
    hostile_peer_is_cut_off(|_| vec![b"\xff not a sync message".to_vec()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_an_oversized_frame_is_disconnected_and_others_are_still_served() {
    hostile_peer_is_cut_off(|_| vec![vec![0u8; SYNC_MESSAGE_BYTES_MAX + 1024]]).await;
}

/// Each request on its own is a well-formed opening (about a record the node does not hold);
/// there are just too many of them: twice the limit, all at once. (The test lowers the limit so
/// that the flood, sent all at once, lands within one window even on a slow machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_requests_is_disconnected_and_others_are_still_served() {
    hostile_peer_is_cut_off_by(Some(FLOOD_LIMIT), |gp| {
        let store = MemoryStore::new();
        let age = AgeIdentity::generate();
        let me: PeerId = phr_core::keys::SigningKey::generate().peer_id();
        let mut replica = Replica::empty(RecordId(random_array()), me);
        let local = Local {
            replica: &mut replica,
            store: &store,
            age: &age,
            device: None,
        };
        (0..2 * u64::from(FLOOD_LIMIT))
            .map(|session| {
                InitiatorSession::start(&local, gp, session << 16, 0)
                    .unwrap()
                    .1
            })
            .collect()
    })
    .await;
}

/// A bare libp2p client that dials `addr` and sends one opening about a record nobody holds.
/// Returns the client (its connection stays open while it lives) and whether the node answered
/// (`false`: it closed the connection instead).
async fn stranger_connects(
    addr: Multiaddr,
    gp: PeerId,
) -> (libp2p::Swarm<cbor::Behaviour<Frame, Frame>>, bool) {
    let mut stranger = bare_client();
    let opening = openings(gp, 1).remove(0);
    stranger.dial(addr).unwrap();
    let mut opening = Some(opening);
    let answered = tokio::time::timeout(WAIT, async {
        loop {
            match stranger.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    if let Some(opening) = opening.take() {
                        stranger
                            .behaviour_mut()
                            .send_request(&peer_id, Frame(opening));
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::Message { .. }) => break true,
                SwarmEvent::ConnectionClosed { .. }
                | SwarmEvent::OutgoingConnectionError { .. }
                | SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                    break false;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the node answers or closes the connection");
    (stranger, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_from_one_address_get_a_few_connections_and_the_patient_still_gets_in() {
    use phr_node::gate::CONNECTIONS_PER_IP_MAX;
    let dir = tempfile::tempdir().unwrap();
    // After the patient's first sync the GP holds the record, and it admits the laptop.
    let Running {
        gp_client,
        gp_task,
        gp_addr,
        gp_party,
        laptop_client,
        laptop_task,
        record_id,
    } = running_and_synced(dir.path()).await;
    let laptop = stop(laptop_client, laptop_task).await;

    // Strangers on the same address (127.0.0.1) take what the gate gives them and keep it.
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..CONNECTIONS_PER_IP_MAX + 4 {
        let (client, answered) = stranger_connects(gp_addr.clone(), gp_party.peer).await;
        if answered {
            kept.push(client);
        } else {
            refused += 1;
        }
    }
    assert_eq!(kept.len(), CONNECTIONS_PER_IP_MAX, "{refused} refused");
    assert_eq!(refused, 4);

    // The laptop, from that same address, connects again and syncs: its room was kept.
    let (laptop_node, laptop_client) = Node::new(laptop).unwrap();
    let laptop_task = tokio::spawn(laptop_node.run());
    let synced = dial_and_sync(&laptop_client, gp_addr, gp_party.peer).await;
    assert!(
        matches!(synced.as_slice(), [Ok((record, _))] if *record == record_id),
        "{synced:?}"
    );
    drop(kept);
    stop(laptop_client, laptop_task).await;
    let gp = stop(gp_client, gp_task).await;
    assert_gp_reads_only_the_summary(&gp, record_id);
}
