//! The libp2p swarm: transports, behaviours and how they are configured.
//!
//! [`build`] makes the swarm a node runs; the event loop in [`crate::net`] owns it. The `sync`
//! behaviour carries the sync protocol; the others keep connections described and alive.

use std::time::Duration;

use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, identify,
    identity::Keypair,
    noise, ping,
    request_response::{self, ProtocolSupport, cbor},
    swarm::NetworkBehaviour,
    tcp, yamux,
};
use phr_core::sync::message::SYNC_MESSAGE_BYTES_MAX;
use serde::{Deserialize, Serialize};

use crate::net::NodeError;

/// The libp2p protocol that carries sync messages.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/phr/sync/1");

/// How long an idle connection stays open.
pub const IDLE_CONNECTION_MS: u64 = 60_000;

/// How long one request-response exchange may take on the wire.
pub const EXCHANGE_TIMEOUT_MS: u64 = 30_000;

/// One sync message, as bytes (CBOR carries them as one byte string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// How a node's swarm is set up.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Serve as a circuit relay for other nodes.
    pub relay_server: bool,
}

/// The node's libp2p behaviours.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)] // The libp2p behaviours it holds have none.
pub struct Behaviour {
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) sync: cbor::Behaviour<Frame, Frame>,
}

/// The swarm of a node with identity `keypair`.
pub fn build(keypair: Keypair, _options: &Options) -> Result<Swarm<Behaviour>, NodeError> {
    let failed = |e: &dyn std::fmt::Display| NodeError::Failed(e.to_string());
    let codec = cbor::codec::Codec::default()
        .set_request_size_maximum(SYNC_MESSAGE_BYTES_MAX as u64)
        .set_response_size_maximum(SYNC_MESSAGE_BYTES_MAX as u64);
    Ok(SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| failed(&e))?
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                "/phr/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            sync: cbor::Behaviour::with_codec(
                codec,
                [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_millis(EXCHANGE_TIMEOUT_MS)),
            ),
        })
        .map_err(|e| failed(&e))?
        .with_swarm_config(|config| {
            config.with_idle_connection_timeout(Duration::from_millis(IDLE_CONNECTION_MS))
        })
        .build())
}

/// Addresses of a peer, learnt from the network (mDNS, identify, Kademlia).
#[derive(Clone, Debug)]
pub struct Learnt {
    /// The peer.
    pub peer: libp2p::PeerId,
    /// Where it can be reached.
    pub addrs: Vec<libp2p::Multiaddr>,
    /// How they were learnt, for the logs ("mdns", "identify", "kademlia").
    pub how: &'static str,
}

/// Handles an event of every behaviour but `sync` (which the event loop handles itself): logs
/// it, feeds what it teaches to the other behaviours, and returns the peer addresses learnt.
pub fn on_event(_swarm: &mut Swarm<Behaviour>, event: BehaviourEvent) -> Vec<Learnt> {
    tracing::trace!(?event, "swarm event");
    Vec::new()
}
