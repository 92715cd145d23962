//! The gate: which incoming connections a node keeps, by who and where they come from.
//!
//! `connection_limits` bounds connections in all and per peer, but a stranger can make PeerIds
//! for free: alone it lets one machine take every incoming slot, and the patient's own devices
//! and providers would then find the node full. The gate keeps room for the peers that a held
//! record admits (owner devices, grantees, relays: [`Gate::set_admitted`], from the engine) and
//! bounds everyone else by number and by IP address:
//!
//! - at most [`CONNECTIONS_UNADMITTED_MAX`] incoming connections from peers no held record
//!   admits, so [`crate::swarm::CONNECTIONS_INCOMING_MAX`] minus that stays for admitted ones;
//! - at most [`CONNECTIONS_PER_IP_MAX`] of those from one IP address.
//!
//! A peer not admitted yet is not refused for being new: a patient's first sync with a new
//! provider comes from a peer the provider does not know yet, and it gets one of the slots.
//! Connections through a relay count against the relay's address.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    multiaddr::Protocol,
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
    },
};

use crate::admission::Admission;

/// Incoming connections from peers that no held record admits, in all.
pub const CONNECTIONS_UNADMITTED_MAX: usize = 192;

/// Incoming connections from peers no held record admits, from one IP address.
pub const CONNECTIONS_PER_IP_MAX: usize = 8;

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Too many connections from strangers in all.
    #[error("this node keeps its remaining connections for the peers its records admit")]
    Full,
    /// Too many from this address.
    #[error("too many connections from {0} by peers this node's records do not admit")]
    Address(IpAddr),
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Gate {
    /// Who is admitted, shared with the codec and the relay ([`crate::admission`]).
    admission: Arc<Admission>,
    /// Incoming connections from peers not admitted when they connected, with where from.
    strangers: BTreeMap<ConnectionId, Option<IpAddr>>,
}

impl Gate {
    /// A gate that shares `admission` with the behaviours that also ask who is admitted.
    pub fn new(admission: Arc<Admission>) -> Self {
        Gate {
            admission,
            strangers: BTreeMap::new(),
        }
    }

    /// Sets the peers some held record admits: they are never refused by the gate, and the
    /// codec and the relay treat them as admitted too.
    pub fn set_admitted(&mut self, admitted: BTreeSet<PeerId>) {
        self.admission.set(admitted);
    }

    /// Who is admitted, as the codec and the relay see it.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Incoming connections from peers not admitted when they connected.
    pub fn strangers(&self) -> usize {
        self.strangers.len()
    }
}

/// The IP address a multiaddr starts with.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // The sync protocol's handler, made next, reads frames by this peer's admission.
        self.admission.connecting(peer);
        if self.admission.is_admitted(&peer) {
            return Ok(dummy::ConnectionHandler);
        }
        if self.strangers.len() >= CONNECTIONS_UNADMITTED_MAX {
            return Err(ConnectionDenied::new(Refused::Full));
        }
        let ip = ip_of(remote_addr);
        if let Some(ip) = ip
            && self.strangers.values().filter(|s| **s == Some(ip)).count() >= CONNECTIONS_PER_IP_MAX
        {
            return Err(ConnectionDenied::new(Refused::Address(ip)));
        }
        // Counted from now: a connection another behaviour denies after this one is closed at
        // once, and its `ConnectionClosed` never comes, so it is counted only until then.
        self.strangers.insert(connection_id, ip);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admission.connecting(peer);
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.strangers.remove(&connection_id);
            }
            FromSwarm::ListenFailure(failure) => {
                // An incoming connection refused after the gate let it in.
                self.strangers.remove(&failure.connection_id);
            }
            _ => {}
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

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
