//! How nodes reach each other, over real libp2p on 127.0.0.1: QUIC, a circuit relay, Kademlia
//! lookups, and what a node refuses when mDNS and the relay server are off.
//!
//! Each test drives its swarms itself: the ones that only answer run in their own task
//! ([`run`]), the one under test is polled in the test body ([`until`]). Every wait is bounded by
//! [`WAIT`]. Hole punching (DCUtR) and AutoNAT need real NATs and public addresses, so they are
//! not tested here.

use std::time::Duration;

use libp2p::{
    Multiaddr, PeerId, Swarm,
    futures::StreamExt,
    identity::Keypair,
    kad,
    multiaddr::Protocol,
    request_response,
    swarm::{
        ConnectionId, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use phr_node::swarm::{self, Behaviour, BehaviourEvent, Frame, Learnt, Options};
use tokio::{sync::mpsc, task::JoinHandle};

/// The longest any one step of a test may take.
const WAIT: Duration = Duration::from_secs(20);

/// Steps a background swarm reports before the test reads them.
const STEPS_QUEUED_MAX: usize = 1024;

/// A node's swarm with a fresh identity.
fn node(options: Options) -> Swarm<Behaviour> {
    swarm::build(Keypair::generate_ed25519(), &options).unwrap()
}

/// What every node in these tests answers to a sync request.
fn answer(request: &[u8]) -> Frame {
    Frame([b"re: ", request].concat())
}

/// What happened when a swarm was polled, as the node's event loop sees it.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Matched once and dropped; a box would hide the patterns.
enum Step {
    /// Any swarm event but the ones below.
    Swarm(SwarmEvent<BehaviourEvent>),
    /// [`swarm::on_event`] learnt a peer's addresses (already added to the swarm).
    Learnt(Learnt),
    /// A sync request came in and was answered.
    Answered {
        peer: PeerId,
        connection_id: ConnectionId,
    },
    /// The answer to a sync request we sent.
    Response {
        peer: PeerId,
        connection_id: ConnectionId,
        frame: Frame,
    },
}

/// Polls `swarm` for one event and does with it what `net.rs` does: answers sync requests, hands
/// every other behaviour event to [`swarm::on_event`] and adds the addresses it learns.
async fn next_steps(swarm: &mut Swarm<Behaviour>) -> Vec<Step> {
    match swarm.select_next_some().await {
        SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
            peer,
            connection_id,
            message,
        })) => match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                let _ = swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, answer(&request.0));
                vec![Step::Answered {
                    peer,
                    connection_id,
                }]
            }
            request_response::Message::Response { response, .. } => vec![Step::Response {
                peer,
                connection_id,
                frame: response,
            }],
        },
        SwarmEvent::Behaviour(event @ BehaviourEvent::Sync(_)) => {
            vec![Step::Swarm(SwarmEvent::Behaviour(event))]
        }
        SwarmEvent::Behaviour(event) => {
            let learnt = swarm::on_event(swarm, event);
            for found in &learnt {
                for addr in &found.addrs {
                    swarm.add_peer_address(found.peer, addr.clone());
                }
            }
            learnt.into_iter().map(Step::Learnt).collect()
        }
        event => vec![Step::Swarm(event)],
    }
}

/// Drives `swarm` until `wanted` picks a step, for at most [`WAIT`].
async fn until<T>(
    swarm: &mut Swarm<Behaviour>,
    what: &str,
    mut wanted: impl FnMut(Step) -> Option<T>,
) -> T {
    let steps = async {
        loop {
            for step in next_steps(swarm).await {
                if let Some(found) = wanted(step) {
                    return found;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, steps)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A swarm driven in its own task, reporting what happens to it.
struct Running {
    peer: PeerId,
    steps: mpsc::Receiver<Step>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `swarm` in its own task until the returned handle is dropped.
fn run(mut swarm: Swarm<Behaviour>) -> Running {
    let peer = *swarm.local_peer_id();
    let (report, steps) = mpsc::channel(STEPS_QUEUED_MAX);
    let task = tokio::spawn(async move {
        loop {
            for step in next_steps(&mut swarm).await {
                // A test that stopped reading has what it needs; the swarm keeps running.
                let _ = report.try_send(step);
            }
        }
    });
    Running { peer, steps, task }
}

/// Waits, for at most [`WAIT`], until `wanted` picks a step `running` reported.
async fn seen<T>(
    running: &mut Running,
    what: &str,
    mut wanted: impl FnMut(Step) -> Option<T>,
) -> T {
    let steps = async {
        loop {
            let step = running.steps.recv().await.expect("the swarm's task ended");
            if let Some(found) = wanted(step) {
                return found;
            }
        }
    };
    tokio::time::timeout(WAIT, steps)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Listens on `addr`; returns the address bound, ending in `/p2p/<peer id>`.
async fn listen(swarm: &mut Swarm<Behaviour>, addr: &str) -> Multiaddr {
    swarm.listen_on(addr.parse().unwrap()).unwrap();
    let bound = until(swarm, "a listen address", |step| match step {
        Step::Swarm(SwarmEvent::NewListenAddr { address, .. }) => Some(address),
        _ => None,
    })
    .await;
    bound.with(Protocol::P2p(*swarm.local_peer_id()))
}

/// Waits for a connection to `peer`; returns its id and whether it goes through a relay.
async fn connected(swarm: &mut Swarm<Behaviour>, peer: PeerId) -> (ConnectionId, Multiaddr, bool) {
    until(swarm, "a connection", |step| match step {
        Step::Swarm(SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            endpoint,
            ..
        }) if peer_id == peer => Some((
            connection_id,
            endpoint.get_remote_address().clone(),
            endpoint.is_relayed(),
        )),
        Step::Swarm(SwarmEvent::OutgoingConnectionError { error, .. }) => {
            panic!("a dial failed: {error}")
        }
        _ => None,
    })
    .await
}

/// Sends one sync request to `peer` and waits for the answer; returns the connection it came on.
async fn exchange(swarm: &mut Swarm<Behaviour>, peer: PeerId, request: &[u8]) -> ConnectionId {
    swarm
        .behaviour_mut()
        .sync
        .send_request(&peer, Frame(request.to_vec()));
    let (connection_id, frame) = until(swarm, "the answer to a sync request", |step| match step {
        Step::Response {
            peer: from,
            connection_id,
            frame,
        } if from == peer => Some((connection_id, frame)),
        Step::Swarm(SwarmEvent::Behaviour(BehaviourEvent::Sync(
            request_response::Event::OutboundFailure { error, .. },
        ))) => panic!("the sync request failed: {error}"),
        _ => None,
    })
    .await;
    assert_eq!(frame, answer(request));
    connection_id
}

fn strip_p2p(mut addr: Multiaddr) -> Multiaddr {
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_a_sync_message_over_quic() {
    let mut gp = node(Options::default());
    let gp_addr = listen(&mut gp, "/ip4/127.0.0.1/udp/0/quic-v1").await;
    let mut gp = run(gp);

    let mut laptop = node(Options::default());
    laptop.dial(gp_addr).unwrap();
    let (_, remote, relayed) = connected(&mut laptop, gp.peer).await;
    assert!(remote.iter().any(|p| p == Protocol::QuicV1), "{remote}");
    assert!(!relayed);
    exchange(&mut laptop, gp.peer, b"hello over QUIC").await;

    let laptop_id = *laptop.local_peer_id();
    seen(&mut gp, "the GP answering", |step| match step {
        Step::Answered { peer, .. } if peer == laptop_id => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptop_reaches_a_phone_only_through_the_relay_it_listens_on() {
    let mut relay = node(Options {
        relay_server: true,
        ..Options::default()
    });
    let relay_addr = listen(&mut relay, "/ip4/127.0.0.1/tcp/0").await;
    // A stranger: the relay holds no record that admits it.
    let mut stranger = node(Options::default());
    // The phone is admitted: the relay holds its record (the node sets this from its ledgers).
    let mut phone = node(Options::default());
    let phone_id = *phone.local_peer_id();
    relay
        .behaviour_mut()
        .gate
        .set_admitted([phone_id].into_iter().collect());
    let _relay = run(relay);

    swarm::listen_via_relay(&mut stranger, &relay_addr).unwrap();
    let refused = until(
        &mut stranger,
        "the stranger's reservation",
        |step| match step {
            Step::Swarm(SwarmEvent::NewListenAddr { address, .. }) => {
                panic!("the relay gave a stranger a reservation: {address}")
            }
            Step::Swarm(SwarmEvent::ListenerClosed { reason, .. }) => Some(reason),
            _ => None,
        },
    )
    .await;
    let error = refused.expect_err("the listener closed without an error");
    assert!(
        format!("{error:?}").contains("ResourceLimitExceeded"),
        "{error:?}"
    );

    // The phone listens nowhere itself: only through its reservation on the relay.
    swarm::listen_via_relay(&mut phone, &relay_addr).unwrap();
    let reserved = until(
        &mut phone,
        "a reservation on the relay",
        |step| match step {
            Step::Swarm(SwarmEvent::NewListenAddr { address, .. }) => Some(address),
            Step::Swarm(SwarmEvent::ListenerClosed { reason, .. }) => {
                panic!("the relay refused the reservation: {reason:?}")
            }
            _ => None,
        },
    )
    .await;
    assert!(
        reserved.iter().any(|p| p == Protocol::P2pCircuit),
        "{reserved}"
    );
    let mut phone = run(phone);

    // The laptop knows the relay's address and the phone's PeerId, nothing else.
    let mut laptop = node(Options::default());
    let laptop_id = *laptop.local_peer_id();
    let circuit = swarm::circuit_addr(&relay_addr, phone.peer);
    laptop.dial(circuit.clone()).unwrap();
    let (circuit_connection, remote, relayed) = connected(&mut laptop, phone.peer).await;
    assert!(relayed, "{remote}");
    assert_eq!(remote, circuit);

    // The only connection to the phone is the circuit, so the exchange must cross it.
    let answered_on = exchange(&mut laptop, phone.peer, b"hello through the relay").await;
    assert_eq!(answered_on, circuit_connection);

    let phone_side = seen(&mut phone, "the relayed connection", |step| match step {
        Step::Swarm(SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            endpoint,
            ..
        }) if peer_id == laptop_id => Some((connection_id, endpoint.is_relayed())),
        _ => None,
    })
    .await;
    assert!(
        phone_side.1,
        "the phone's connection to the laptop is not relayed"
    );
    let answered = seen(&mut phone, "the phone answering", |step| match step {
        Step::Answered {
            peer,
            connection_id,
        } if peer == laptop_id => Some(connection_id),
        _ => None,
    })
    .await;
    assert_eq!(answered, phone_side.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_finds_a_peer_by_its_peer_id_through_a_bootstrap_node() {
    // R: a relay, which is always a DHT server.
    let mut r = node(Options {
        relay_server: true,
        ..Options::default()
    });
    let r_addr = listen(&mut r, "/ip4/127.0.0.1/tcp/0").await;
    let r_id = *r.local_peer_id();
    let mut r = run(r);

    // B: a node with a confirmed external address (on a real network AutoNAT confirms it; on
    // loopback the test does), so Kademlia lets it answer lookups.
    let mut b = node(Options::default());
    let b_addr = strip_p2p(listen(&mut b, "/ip4/127.0.0.1/tcp/0").await);
    assert_eq!(b.behaviour().kademlia.mode(), kad::Mode::Client);
    b.add_external_address(b_addr.clone());
    assert_eq!(b.behaviour().kademlia.mode(), kad::Mode::Server);
    swarm::add_bootstrap(&mut b, r_id, r_addr.clone());
    b.dial(r_addr.clone()).unwrap();
    let b_id = *b.local_peer_id();
    let _b = run(b);

    // R learns where B listens from identify, and remembers it in Kademlia.
    let at_r = seen(&mut r, "R learning B's addresses", |step| match step {
        Step::Learnt(learnt) if learnt.peer == b_id && learnt.how == "identify" => Some(learnt),
        _ => None,
    })
    .await;
    assert!(at_r.addrs.contains(&b_addr), "{at_r:?}");

    // A knows R, and of B only its PeerId.
    let mut a = node(Options::default());
    swarm::add_bootstrap(&mut a, r_id, r_addr);
    assert!(!a.is_connected(&b_id));
    swarm::find_peer(&mut a, b_id);
    let found = until(&mut a, "the lookup of B", |step| match step {
        Step::Learnt(learnt) if learnt.peer == b_id && learnt.how == "kademlia" => Some(learnt),
        _ => None,
    })
    .await;
    assert!(found.addrs.contains(&b_addr), "{found:?}");

    // A dials B at the address the lookup found, and they sync.
    let dial = DialOpts::peer_id(b_id)
        .addresses(found.addrs)
        .condition(PeerCondition::Always)
        .build();
    let dialled = dial.connection_id();
    a.dial(dial).unwrap();
    let connection = until(&mut a, "A's connection to B", |step| match step {
        Step::Swarm(SwarmEvent::ConnectionEstablished {
            connection_id,
            endpoint,
            ..
        }) if connection_id == dialled => Some(endpoint.get_remote_address().clone()),
        Step::Swarm(SwarmEvent::OutgoingConnectionError {
            connection_id,
            error,
            ..
        }) if connection_id == dialled => panic!("A could not dial B: {error}"),
        _ => None,
    })
    .await;
    assert_eq!(strip_p2p(connection), b_addr);
    exchange(&mut a, b_id, b"hello, found you").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_and_the_relay_server_are_off_unless_asked_for() {
    let both = node(Options {
        mdns: true,
        relay_server: true,
    });
    assert!(both.behaviour().mdns.is_enabled());
    assert!(both.behaviour().relay.is_enabled());
    assert_eq!(both.behaviour().kademlia.mode(), kad::Mode::Server);

    let mut plain = node(Options::default());
    assert!(!plain.behaviour().mdns.is_enabled());
    assert!(!plain.behaviour().relay.is_enabled());
    let plain_addr = listen(&mut plain, "/ip4/127.0.0.1/tcp/0").await;
    let _plain = run(plain);

    // A reservation at a node that is not a relay server is refused: the listener closes.
    let mut phone = node(Options::default());
    assert!(swarm::listen_via_relay(&mut phone, &strip_p2p(plain_addr.clone())).is_err());
    swarm::listen_via_relay(&mut phone, &plain_addr).unwrap();
    let refused = until(&mut phone, "the reservation's outcome", |step| match step {
        Step::Swarm(SwarmEvent::NewListenAddr { address, .. }) => {
            panic!("a node without a relay server gave a reservation: {address}")
        }
        Step::Swarm(SwarmEvent::ListenerClosed { reason, .. }) => Some(reason),
        _ => None,
    })
    .await;
    let error = refused.expect_err("the listener closed without an error");
    // Refused because the node does not speak the relay protocol at all.
    assert!(format!("{error:?}").contains("Unsupported"), "{error:?}");
}

/// A node says in identify what protocol family it speaks, and nothing of its software or
/// version: a stranger that connects learns no more than the protocols it must know.
#[tokio::test]
async fn identify_names_no_software_and_no_version() {
    let mut a = node(Options::default());
    let a_addr = listen(&mut a, "/ip4/127.0.0.1/tcp/0").await;
    let _a = run(a);
    let mut b = node(Options::default());
    b.dial(a_addr).unwrap();
    let info = tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Identify(
                libp2p::identify::Event::Received { info, .. },
            )) = b.select_next_some().await
            {
                return info;
            }
        }
    })
    .await
    .expect("identify within the wait");
    assert_eq!(info.protocol_version, swarm::IDENTIFY_PROTOCOL_VERSION);
    assert_eq!(info.agent_version, "", "{info:?}");
}

#[test]
fn mdns_is_on_by_default_only_on_a_providers_node() {
    use phr_core::party::Role;
    assert!(swarm::mdns_by_default(Role::Provider, false, false));
    assert!(!swarm::mdns_by_default(Role::Patient, false, false));
    assert!(!swarm::mdns_by_default(Role::Relay, false, false));
    assert!(swarm::mdns_by_default(Role::Patient, true, false));
    assert!(!swarm::mdns_by_default(Role::Provider, false, true));
}
