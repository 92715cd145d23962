//! The libp2p swarm: transports, behaviours and how they are configured.
//!
//! [`build`] makes the swarm a node runs; the event loop in [`crate::net`] owns it, handles the
//! `sync` behaviour's events itself and hands every other behaviour event to [`on_event`], which
//! logs it, feeds what it teaches to the other behaviours and returns the peer addresses learnt.
//!
//! Transports: TCP (secured with Noise, multiplexed with Yamux), QUIC (TLS 1.3 and streams built
//! in), and the circuit relay client transport, which reaches a node behind a NAT through a relay
//! that node holds a reservation on (`/…/p2p/<relay>/p2p-circuit/p2p/<node>`).
//!
//! Behaviours, and what each is for in phr:
//!
//! - `limits` ([`connection_limits`]): bounds connections per peer, incoming and pending, so a
//!   flood of dials cannot exhaust a node (every limit is a named constant below).
//! - `gate` ([`Gate`]): keeps incoming room for the peers a held record admits, and bounds the
//!   others in all and per IP address.
//! - `identify`: peers tell each other their listen addresses and protocols; the addresses a
//!   peer listens on are fed to Kademlia and returned as learnt ("identify").
//! - `ping`: checks that open connections are still alive, and measures round trips.
//! - `sync`: request-response on [`SYNC_PROTOCOL`], each message one CBOR byte string
//!   ([`FrameCodec`], which refuses an oversized frame before reading it and lets the node know
//!   who sent it); carries one sync message of `phr-core` per request, the only behaviour that
//!   moves record data.
//! - `mdns` (on only with [`Options::mdns`]): finds the patient's other devices and the
//!   practice's node on the same LAN; discoveries are returned as learnt ("mdns").
//! - `kademlia` (protocol [`KADEMLIA_PROTOCOL`]): finds the addresses of a PeerId named by a
//!   contact card or the consent ledger ([`find_peer`]); results are returned as learnt
//!   ("kademlia"). Relay servers are always DHT servers; other nodes let Kademlia decide (it
//!   serves once the node has a confirmed external address, e.g. from AutoNAT). A lookup only
//!   confirms peers that serve; a device behind NAT is reached through its relay instead.
//!   Kademlia stores no records for others: phr uses it for peer routing only.
//! - `relay` (on only with [`Options::relay_server`]): a circuit relay v2 server, so devices
//!   behind NAT (a phone on a mobile network) can be reached through an always-on node. It
//!   takes reservations only from peers a record it holds admits ([`crate::admission`]).
//! - `relay_addrs` (on with the relay server, [`ListenAddrsAreExternal`]): confirms the relay's
//!   listen addresses as external at once; the relay hands them out in its reservations.
//! - `relay_client`: takes reservations on relays ([`listen_via_relay`]) and dials peers
//!   through them ([`circuit_addr`]).
//! - `dcutr`: upgrades a relayed connection to a direct one by hole punching, when the NATs allow.
//! - `autonat` (v1): asks peers to dial back, to learn whether this node is publicly reachable;
//!   a confirmed address turns Kademlia into server mode.
//!
//! What the tests show and do not: `tests/discovery.rs` runs QUIC, the relay, Kademlia lookups
//! and a refused reservation over 127.0.0.1. Hole punching (DCUtR) and AutoNAT need real NATs
//! and public addresses: on loopback DCUtR tries the ports peers were observed at, which nobody
//! listens on, and gives up; AutoNAT dials back only global addresses. Neither is tested.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, autonat, connection_limits,
    core::{Endpoint, transport::PortUse},
    dcutr, identify,
    identity::Keypair,
    kad, mdns,
    multiaddr::Protocol,
    noise, ping, relay,
    request_response::{self, ProtocolSupport},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, behaviour::toggle::Toggle, dummy,
    },
    tcp, yamux,
};
use phr_core::{
    appointments::{SLOTS_ANSWER_BYTES_MAX, SLOTS_QUERY_BYTES_MAX, SlotsAnswer, SlotsQuery},
    sync::message::SYNC_MESSAGE_BYTES_MAX,
};

use crate::{
    admission::{Admission, AdmittedOnly},
    codec::FrameCodec,
    gate::Gate,
};
use serde::{Deserialize, Serialize};

use crate::net::NodeError;

/// The libp2p protocol that carries sync messages.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/phr/sync/3");

/// The protocol a patient's node asks a practice's for its free slots on (CBOR, bounded).
pub const SLOTS_PROTOCOL: StreamProtocol = StreamProtocol::new("/phr/slots/1");

/// phr's own Kademlia DHT: a separate protocol name keeps phr nodes out of the public IPFS DHT
/// (and it out of theirs).
pub const KADEMLIA_PROTOCOL: StreamProtocol = StreamProtocol::new("/phr/kad/1");

/// The protocol family nodes announce in identify.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/phr/1";

/// How long an idle connection stays open.
pub const IDLE_CONNECTION_MS: u64 = 60_000;

/// How long one request-response exchange may take on the wire.
pub const EXCHANGE_TIMEOUT_MS: u64 = 30_000;

/// Established connections to one peer. Two direct dials that cross (both sides dial at once)
/// must both survive, or a limit of one drops both; DCUtR then adds a direct connection while
/// the relayed one it upgrades is still open: hence three.
pub const CONNECTIONS_PER_PEER_MAX: u32 = 3;

/// Established incoming connections in all. Room for every reservation a relay holds
/// ([`RELAY_RESERVATIONS_MAX`]) and as many again for the devices and providers that sync.
pub const CONNECTIONS_INCOMING_MAX: u32 = 256;

/// Incoming connections still in their handshake. Each costs a Noise or TLS handshake; a
/// bound keeps a flood of half-open connections from taking the CPU.
pub const CONNECTIONS_PENDING_INCOMING_MAX: u32 = 64;

/// Outgoing dials in flight. A Kademlia lookup dials a few peers at a time and a sync dials
/// one; more than this at once is a bug or an abuse of [`find_peer`].
pub const CONNECTIONS_PENDING_OUTGOING_MAX: u32 = 64;

/// Sync streams open at once on one connection (libp2p's default is 100). A session sends one
/// request at a time, so a peer syncing several records needs a few; each open stream may hold
/// a frame being read.
pub const SYNC_STREAMS_PER_CONNECTION_MAX: usize = 8;

/// The most slot queries one connection may have open at once.
pub const SLOTS_STREAMS_PER_CONNECTION_MAX: usize = 2;

/// How long a Kademlia lookup may run before it reports what it found.
pub const KADEMLIA_QUERY_TIMEOUT_MS: u64 = 30_000;

/// Addresses of one peer kept from one discovery event. A peer's identify message is its own
/// word: this bounds what one peer can make us store and dial.
pub const LEARNT_ADDRS_PER_PEER_MAX: usize = 16;

/// Reservations a relay server holds at once: the devices behind NAT it makes reachable.
pub const RELAY_RESERVATIONS_MAX: usize = 128;

/// Reservations per peer: one per address family and transport of a device, with room for a
/// renewal that overlaps the old reservation.
pub const RELAY_RESERVATIONS_PER_PEER_MAX: usize = 4;

/// How long a reservation lasts before the client must renew it.
pub const RELAY_RESERVATION_MS: u64 = 60 * 60 * 1000;

/// Circuits a relay server carries at once.
pub const RELAY_CIRCUITS_MAX: usize = 32;

/// Circuits per peer (as source or destination) at once.
pub const RELAY_CIRCUITS_PER_PEER_MAX: usize = 4;

/// How long one circuit lasts. Long enough for a sync session that DCUtR could not upgrade;
/// the node re-dials for the next one.
pub const RELAY_CIRCUIT_MS: u64 = 10 * 60 * 1000;

/// Bytes one circuit carries, both directions together: one sync request and one response of
/// the largest size, so the largest blob can cross a relay.
pub const RELAY_CIRCUIT_BYTES_MAX: u64 = 2 * SYNC_MESSAGE_BYTES_MAX as u64;

// A relay must be able to accept a connection from every peer it holds a reservation for.
const _: () = assert!(RELAY_RESERVATIONS_MAX < CONNECTIONS_INCOMING_MAX as usize);

/// One sync message, as bytes (CBOR carries them as one byte string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// Whether a node of `role` discovers peers with mDNS, given `--mdns` and `--no-mdns`. mDNS
/// announces a stable PeerId to everyone on the local network (a café's Wi-Fi): a patient's
/// device stays silent unless asked (its devices find each other through their contacts'
/// addresses, relays and Kademlia), and so does a relay (on a server, nobody to find); a
/// provider's node announces itself, so that patients' devices in the practice find it.
pub fn mdns_by_default(role: phr_core::party::Role, on: bool, off: bool) -> bool {
    match (on, off) {
        (true, _) => true,
        (_, true) => false,
        _ => role == phr_core::party::Role::Provider,
    }
}

/// How a node's swarm is set up.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Serve as a circuit relay for other nodes (and as a Kademlia DHT server).
    pub relay_server: bool,
}

/// The node's libp2p behaviours (see the module documentation for what each is for).
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)] // The libp2p behaviours it holds have none.
pub struct Behaviour {
    /// Connection limits; first, so a connection over a limit is refused before the others
    /// set anything up for it.
    pub limits: connection_limits::Behaviour,
    /// Room kept for admitted peers; strangers bounded in all and per IP. Before `sync`: it
    /// notes whose connection it is for the codec ([`crate::admission`]).
    pub gate: Gate,
    /// Listen addresses and protocols, exchanged on every connection.
    pub identify: identify::Behaviour,
    /// Liveness checks.
    pub ping: ping::Behaviour,
    /// The sync protocol.
    pub sync: request_response::Behaviour<FrameCodec>,
    /// Free slots asked for live ([`SLOTS_PROTOCOL`]): a query of at most
    /// [`SLOTS_QUERY_BYTES_MAX`], an answer of at most [`SLOTS_ANSWER_BYTES_MAX`]; larger ones
    /// are refused unread by the codec.
    pub slots: request_response::cbor::Behaviour<SlotsQuery, SlotsAnswer>,
    /// LAN discovery, present only with [`Options::mdns`].
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Peer routing: a PeerId's addresses.
    pub kademlia: kad::Behaviour<kad::store::MemoryStore>,
    /// Circuit relay server, present only with [`Options::relay_server`].
    pub relay: Toggle<relay::Behaviour>,
    /// A relay server's listen addresses, confirmed as external (present with the relay).
    pub relay_addrs: Toggle<ListenAddrsAreExternal>,
    /// Circuit relay client: reservations and relayed dials.
    pub relay_client: relay::client::Behaviour,
    /// Hole punching over relayed connections.
    pub dcutr: dcutr::Behaviour,
    /// Reachability probes.
    pub autonat: autonat::Behaviour,
}

/// The swarm of a node with identity `keypair`.
pub fn build(keypair: Keypair, options: &Options) -> Result<Swarm<Behaviour>, NodeError> {
    let failed = |e: &dyn std::fmt::Display| NodeError::Failed(e.to_string());
    Ok(SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| failed(&e))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| failed(&e))?
        .with_behaviour(|key, relay_client| {
            behaviour(key, relay_client, options).map_err(Into::into)
        })
        .map_err(|e| failed(&e))?
        .with_swarm_config(|config| {
            config.with_idle_connection_timeout(Duration::from_millis(IDLE_CONNECTION_MS))
        })
        .build())
}

/// The behaviours of a node with identity `key`.
fn behaviour(
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    options: &Options,
) -> Result<Behaviour, std::io::Error> {
    let peer = key.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX))
        .with_max_established_incoming(Some(CONNECTIONS_INCOMING_MAX))
        .with_max_pending_incoming(Some(CONNECTIONS_PENDING_INCOMING_MAX))
        .with_max_pending_outgoing(Some(CONNECTIONS_PENDING_OUTGOING_MAX));
    let mdns = match options.mdns {
        true => Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer)?),
        false => None,
    };
    let admission = Arc::new(Admission::default());
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        gate: Gate::new(admission.clone()),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.into(), key.public())
                // Says nothing of the software or its version (rust-libp2p's default names
                // both): a peer learns what it needs from the protocols.
                .with_agent_version(String::new())
                // A reservation on a relay adds a listen address; peers hear of it at once.
                .with_push_listen_addr_updates(true),
        ),
        ping: ping::Behaviour::default(),
        sync: request_response::Behaviour::with_codec(
            FrameCodec::new(admission.clone()),
            [(SYNC_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_millis(EXCHANGE_TIMEOUT_MS))
                .with_max_concurrent_streams(SYNC_STREAMS_PER_CONNECTION_MAX),
        ),
        slots: request_response::cbor::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(SLOTS_QUERY_BYTES_MAX)
                .set_response_size_maximum(SLOTS_ANSWER_BYTES_MAX),
            [(SLOTS_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_millis(EXCHANGE_TIMEOUT_MS))
                .with_max_concurrent_streams(SLOTS_STREAMS_PER_CONNECTION_MAX),
        ),
        mdns: Toggle::from(mdns),
        kademlia: kademlia(peer, options),
        relay: Toggle::from(options.relay_server.then(|| relay_server(peer, admission))),
        relay_addrs: Toggle::from(options.relay_server.then(ListenAddrsAreExternal::default)),
        relay_client,
        dcutr: dcutr::Behaviour::new(peer),
        // The defaults are bounded: a few probes, throttled per peer and in all, and dial-backs
        // only to global addresses.
        autonat: autonat::Behaviour::new(peer, autonat::Config::default()),
    })
}

/// Kademlia for peer routing only.
fn kademlia(peer: PeerId, options: &Options) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut config = kad::Config::new(KADEMLIA_PROTOCOL);
    config
        .set_query_timeout(Duration::from_millis(KADEMLIA_QUERY_TIMEOUT_MS))
        // Records and provider announcements that peers send are handed to us as events
        // instead of stored, and we drop them: phr stores nothing in the DHT.
        .set_record_filtering(kad::StoreInserts::FilterBoth);
    let mut kademlia =
        kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), config);
    if options.relay_server {
        // A relay is always on and reachable by design: it answers lookups from the start
        // instead of waiting for AutoNAT to confirm an address.
        kademlia.set_mode(Some(kad::Mode::Server));
    }
    kademlia
}

/// A circuit relay server with phr's limits, which takes reservations only from peers
/// `admission` admits.
fn relay_server(peer: PeerId, admission: Arc<Admission>) -> relay::Behaviour {
    let mut config = relay::Config {
        max_reservations: RELAY_RESERVATIONS_MAX,
        max_reservations_per_peer: RELAY_RESERVATIONS_PER_PEER_MAX,
        reservation_duration: Duration::from_millis(RELAY_RESERVATION_MS),
        max_circuits: RELAY_CIRCUITS_MAX,
        max_circuits_per_peer: RELAY_CIRCUITS_PER_PEER_MAX,
        max_circuit_duration: Duration::from_millis(RELAY_CIRCUIT_MS),
        max_circuit_bytes: RELAY_CIRCUIT_BYTES_MAX,
        // libp2p's rate limits per peer and per IP address for reservations and circuits.
        ..relay::Config::default()
    };
    config
        .reservation_rate_limiters
        .push(Box::new(AdmittedOnly(admission)));
    let mut relay = relay::Behaviour::new(peer, config);
    // By default a relay serves only once it has a confirmed external address; a node run with
    // `--relay` was asked to relay, so it serves from the start.
    relay.set_status(Some(relay::Status::Enable));
    relay
}

/// Confirms each of the node's own listen addresses (but relayed ones) as an external address,
/// and expires it when the listener stops.
///
/// A relay server needs confirmed external addresses: it hands them to every client in its
/// reservation, and a reservation without addresses is refused by the client. A node run as a
/// relay is deployed to be reachable where it listens, so it does not wait for AutoNAT (which
/// needs connected peers and takes a probe round) to confirm them. Other nodes do not use this.
#[derive(Debug, Default)]
pub struct ListenAddrsAreExternal {
    /// Confirmations and expiries not yet handed to the swarm. The swarm polls behaviours after
    /// every event it delivers, so this holds at most one entry per listen address.
    queued: VecDeque<ToSwarm<Infallible, Infallible>>,
    waker: Option<Waker>,
}

impl NetworkBehaviour for ListenAddrsAreExternal {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let relayed = |addr: &Multiaddr| addr.iter().any(|p| p == Protocol::P2pCircuit);
        let next = match event {
            FromSwarm::NewListenAddr(new) if !relayed(new.addr) => {
                ToSwarm::ExternalAddrConfirmed(new.addr.clone())
            }
            FromSwarm::ExpiredListenAddr(gone) if !relayed(gone.addr) => {
                ToSwarm::ExternalAddrExpired(gone.addr.clone())
            }
            _ => return,
        };
        self.queued.push_back(next);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        match self.queued.pop_front() {
            Some(next) => Poll::Ready(next),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Starts a Kademlia lookup of `peer`'s addresses. The result comes back through [`on_event`]
/// as a [`Learnt`] with `how: "kademlia"`, or not at all if the lookup finds nothing.
///
/// A lookup can only confirm a peer that answers Kademlia requests (a DHT server); a node that
/// is not publicly reachable is found through the relay it listens on instead ([`circuit_addr`]).
pub fn find_peer(swarm: &mut Swarm<Behaviour>, peer: PeerId) {
    let query = swarm.behaviour_mut().kademlia.get_closest_peers(peer);
    tracing::debug!(%peer, ?query, "looking up a peer's addresses");
}

/// Adds a known peer (a relay or bootstrap node from the configuration or a contact card) at
/// `addr` to Kademlia's routing table and to the swarm's addresses. It dials nothing itself:
/// Kademlia bootstraps from a new peer on its own.
pub fn add_bootstrap(swarm: &mut Swarm<Behaviour>, peer: PeerId, addr: Multiaddr) {
    if let kad::RoutingUpdate::Failed = swarm
        .behaviour_mut()
        .kademlia
        .add_address(&peer, addr.clone())
    {
        tracing::warn!(%peer, %addr, "Kademlia did not take the bootstrap address");
    }
    swarm.add_peer_address(peer, addr);
}

/// The address that reaches `peer` through the relay at `relay`, which must end in
/// `/p2p/<relay peer id>`: `<relay>/p2p-circuit/p2p/<peer>`.
pub fn circuit_addr(relay: &Multiaddr, peer: PeerId) -> Multiaddr {
    relay
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(peer))
}

/// Listens on `<relay>/p2p-circuit`: dials the relay at `relay` (which must end in
/// `/p2p/<relay peer id>`) and asks it for a reservation. Once the relay accepts, the swarm
/// reports the circuit address as a new listen address; if it refuses, the listener closes
/// with an error.
pub fn listen_via_relay(
    swarm: &mut Swarm<Behaviour>,
    relay: &Multiaddr,
) -> Result<libp2p::core::transport::ListenerId, NodeError> {
    let Some(Protocol::P2p(relay_peer)) = relay.iter().last() else {
        return Err(NodeError::Failed(format!(
            "the relay address {relay} does not end in /p2p/<relay peer id>"
        )));
    };
    swarm.add_peer_address(relay_peer, relay.clone());
    swarm
        .listen_on(relay.clone().with(Protocol::P2pCircuit))
        .map_err(|e| NodeError::Failed(format!("listening via the relay {relay}: {e}")))
}

/// Addresses of a peer, learnt from the network (mDNS, identify, Kademlia).
#[derive(Clone, Debug)]
pub struct Learnt {
    /// The peer.
    pub peer: PeerId,
    /// Where it can be reached (without a trailing `/p2p/<peer>`), at most
    /// [`LEARNT_ADDRS_PER_PEER_MAX`].
    pub addrs: Vec<Multiaddr>,
    /// How they were learnt, for the logs ("mdns", "identify", "kademlia").
    pub how: &'static str,
}

/// Handles an event of every behaviour but `sync` (which the event loop handles itself): logs
/// it, feeds what it teaches to the other behaviours, and returns the peer addresses learnt.
pub fn on_event(swarm: &mut Swarm<Behaviour>, event: BehaviourEvent) -> Vec<Learnt> {
    match event {
        BehaviourEvent::Mdns(event) => on_mdns(swarm, event),
        BehaviourEvent::Identify(event) => on_identify(swarm, event),
        BehaviourEvent::Kademlia(event) => on_kademlia(event),
        BehaviourEvent::Relay(event) => {
            log_relay(event);
            Vec::new()
        }
        BehaviourEvent::RelayClient(event) => {
            log_relay_client(event);
            Vec::new()
        }
        BehaviourEvent::Dcutr(dcutr::Event {
            remote_peer_id,
            result,
        }) => {
            match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "hole punched: a direct connection replaces the relayed one")
                }
                Err(error) => {
                    tracing::debug!(peer = %remote_peer_id, %error, "hole punching failed; the relayed connection stays")
                }
            }
            Vec::new()
        }
        BehaviourEvent::Autonat(event) => {
            log_autonat(event);
            Vec::new()
        }
        BehaviourEvent::Ping(event) => {
            if let Err(error) = event.result {
                tracing::debug!(peer = %event.peer, %error, "ping failed");
            }
            Vec::new()
        }
        BehaviourEvent::Sync(event) => {
            tracing::trace!(
                ?event,
                "a sync event reached on_event; the event loop handles those"
            );
            Vec::new()
        }
        BehaviourEvent::Slots(event) => {
            tracing::trace!(
                ?event,
                "a slots event reached on_event; the event loop handles those"
            );
            Vec::new()
        }
        BehaviourEvent::Limits(never) | BehaviourEvent::RelayAddrs(never) => match never {},
    }
}

/// Peers found on the LAN: remembered by Kademlia and returned.
fn on_mdns(swarm: &mut Swarm<Behaviour>, event: mdns::Event) -> Vec<Learnt> {
    match event {
        mdns::Event::Discovered(found) => {
            let mut by_peer: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
            for (peer, addr) in found {
                by_peer.entry(peer).or_default().push(addr);
            }
            by_peer
                .into_iter()
                .filter_map(|(peer, addrs)| learnt(peer, addrs, "mdns"))
                .inspect(|learnt| add_to_kademlia(swarm, learnt))
                .collect()
        }
        mdns::Event::Expired(gone) => {
            for (peer, addr) in gone {
                tracing::debug!(%peer, %addr, "an mDNS address expired");
            }
            Vec::new()
        }
    }
}

/// The addresses a peer says it listens on (not the address it saw us at): remembered by
/// Kademlia, so that lookups through this node find the peer, and returned.
fn on_identify(swarm: &mut Swarm<Behaviour>, event: identify::Event) -> Vec<Learnt> {
    match event {
        identify::Event::Received { peer_id, info, .. } => {
            tracing::debug!(
                peer = %peer_id,
                agent = %info.agent_version,
                addrs = ?info.listen_addrs,
                "identified a peer"
            );
            let Some(learnt) = learnt(peer_id, info.listen_addrs, "identify") else {
                return Vec::new();
            };
            add_to_kademlia(swarm, &learnt);
            vec![learnt]
        }
        identify::Event::Error { peer_id, error, .. } => {
            tracing::debug!(peer = %peer_id, %error, "identify failed");
            Vec::new()
        }
        identify::Event::Sent { .. } | identify::Event::Pushed { .. } => Vec::new(),
    }
}

/// Lookups started by [`find_peer`] return the addresses found for the peer sought.
fn on_kademlia(event: kad::Event) -> Vec<Learnt> {
    match event {
        kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::GetClosestPeers(result),
            ..
        } => {
            let (key, peers) = match result {
                Ok(kad::GetClosestPeersOk { key, peers }) => (key, peers),
                Err(kad::GetClosestPeersError::Timeout { key, peers }) => {
                    tracing::debug!("a Kademlia lookup timed out; using what it found");
                    (key, peers)
                }
            };
            let Ok(sought) = PeerId::from_bytes(&key) else {
                return Vec::new();
            };
            let found = peers
                .into_iter()
                .find(|info| info.peer_id == sought)
                .and_then(|info| learnt(info.peer_id, info.addrs, "kademlia"));
            if found.is_none() {
                tracing::debug!(peer = %sought, "a Kademlia lookup did not find the peer");
            }
            found.into_iter().collect()
        }
        kad::Event::OutboundQueryProgressed { result, .. } => {
            tracing::trace!(?result, "Kademlia query progressed");
            Vec::new()
        }
        kad::Event::InboundRequest {
            request: kad::InboundRequest::PutRecord { source, .. },
        } => {
            tracing::debug!(peer = %source, "dropped a DHT record a peer asked us to store");
            Vec::new()
        }
        kad::Event::ModeChanged { new_mode } => {
            tracing::info!(mode = %new_mode, "Kademlia mode changed");
            Vec::new()
        }
        event => {
            tracing::trace!(?event, "Kademlia event");
            Vec::new()
        }
    }
}

fn log_relay(event: relay::Event) {
    match event {
        relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
            tracing::info!(peer = %src_peer_id, "relay: accepted a reservation")
        }
        relay::Event::ReservationReqDenied { src_peer_id, .. } => {
            tracing::info!(peer = %src_peer_id, "relay: denied a reservation (a limit was reached)")
        }
        relay::Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => tracing::info!(from = %src_peer_id, to = %dst_peer_id, "relay: circuit opened"),
        relay::Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            ..
        } => tracing::info!(from = %src_peer_id, to = %dst_peer_id, "relay: circuit denied"),
        relay::Event::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            error,
        } => {
            tracing::debug!(from = %src_peer_id, to = %dst_peer_id, ?error, "relay: circuit closed")
        }
        event => tracing::debug!(?event, "relay"),
    }
}

fn log_relay_client(event: relay::client::Event) {
    match event {
        relay::client::Event::ReservationReqAccepted {
            relay_peer_id,
            renewal,
            ..
        } => tracing::info!(relay = %relay_peer_id, renewal, "reservation accepted by a relay"),
        relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
            tracing::info!(relay = %relay_peer_id, "circuit established through a relay")
        }
        relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
            tracing::info!(peer = %src_peer_id, "a peer reached us through a relay")
        }
    }
}

fn log_autonat(event: autonat::Event) {
    match event {
        autonat::Event::StatusChanged { old, new } => {
            tracing::info!(?old, ?new, "NAT status changed")
        }
        event => tracing::trace!(?event, "AutoNAT probe"),
    }
}

/// At most [`LEARNT_ADDRS_PER_PEER_MAX`] distinct addresses of `peer`, each without a trailing
/// `/p2p/<peer>`; `None` if there are none.
fn learnt(peer: PeerId, addrs: Vec<Multiaddr>, how: &'static str) -> Option<Learnt> {
    let mut kept: Vec<Multiaddr> = Vec::new();
    for mut addr in addrs {
        if let Some(Protocol::P2p(id)) = addr.iter().last() {
            if id != peer {
                continue; // An address of some other peer: not where `peer` listens.
            }
            addr.pop();
        }
        if !addr.is_empty() && !kept.contains(&addr) {
            kept.push(addr);
        }
        if kept.len() == LEARNT_ADDRS_PER_PEER_MAX {
            break;
        }
    }
    (!kept.is_empty()).then_some(Learnt {
        peer,
        addrs: kept,
        how,
    })
}

fn add_to_kademlia(swarm: &mut Swarm<Behaviour>, learnt: &Learnt) {
    for addr in &learnt.addrs {
        swarm
            .behaviour_mut()
            .kademlia
            .add_address(&learnt.peer, addr.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learnt_addresses_are_bounded_deduplicated_and_lose_their_own_peer_id() {
        let peer = PeerId::random();
        let other = PeerId::random();
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let mut addrs = vec![
            tcp.clone().with(Protocol::P2p(peer)),
            tcp.clone(),
            tcp.clone().with(Protocol::P2p(other)),
        ];
        addrs.extend((0..100u16).map(|port| {
            format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
                .parse()
                .unwrap()
        }));
        let kept = learnt(peer, addrs, "identify").unwrap();
        assert_eq!(kept.addrs.len(), LEARNT_ADDRS_PER_PEER_MAX);
        assert_eq!(kept.addrs[0], tcp);
        assert_eq!(kept.addrs.iter().filter(|a| **a == tcp).count(), 1);
        assert!(learnt(peer, Vec::new(), "identify").is_none());
    }

    #[test]
    fn a_circuit_address_names_the_relay_then_the_peer() {
        let relay = PeerId::random();
        let peer = PeerId::random();
        let at: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}")
            .parse()
            .unwrap();
        assert_eq!(
            circuit_addr(&at, peer).to_string(),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}")
        );
    }
}
