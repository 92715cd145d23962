//! The node's network: a libp2p swarm carrying the sync protocol, and the event loop that owns it.
//!
//! One task owns the [`Swarm`] and the sync [`Engine`] and runs a `select!` loop over swarm
//! events, commands from [`Client`] handles (a bounded channel, each command with a oneshot for
//! its answer), and a clock tick that lets sessions resend or give up. Every sync message travels
//! as one request-response exchange on [`SYNC_PROTOCOL`](crate::swarm::SYNC_PROTOCOL): a session's request is a libp2p request,
//! its answer the libp2p response. A closing request, which the protocol does not answer, gets an
//! empty response so the exchange completes.
//!
//! Nothing here decides who may have what: the engine does, by the consent ledger, and a peer
//! the ledger does not admit is answered as if this node held nothing. A peer whose message
//! breaks the protocol (garbage, over the size limits, out of turn) is disconnected; other
//! peers are served as before.

use std::{collections::BTreeMap, time::Duration};

use libp2p::{
    Multiaddr, Swarm, futures::StreamExt, identity::Keypair, request_response, swarm::SwarmEvent,
};
use phr_core::{
    home::Home,
    keys::{PeerId, RecordId},
    section::Section,
    sync::{Ended, Engine, SessionStats},
};
use tokio::sync::{mpsc, oneshot};

use crate::swarm::{self, Behaviour, BehaviourEvent, Frame};

/// Commands queued for the event loop at most; senders wait beyond it.
pub const COMMANDS_MAX: usize = 64;

/// How often sessions are given the time (to resend or give up).
pub const TICK_MS: u64 = 1_000;

/// What a node holds of one record, for status and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The record.
    pub record: RecordId,
    /// Blobs stored per section.
    pub blobs: BTreeMap<Section, usize>,
    /// Ledger operations held.
    pub ledger_ops: usize,
}

/// What a finished sync with one peer did, per record.
pub type Synced = Vec<Result<(RecordId, SessionStats), String>>;

/// A request to the event loop.
#[derive(Debug)]
enum Command {
    Listen {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<Multiaddr, String>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, String>>,
    },
    Sync {
        peer: PeerId,
        reply: oneshot::Sender<Synced>,
    },
    Held {
        reply: oneshot::Sender<Vec<Held>>,
    },
}

/// A handle to a running node.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node's event loop is gone.
    #[error("the node has stopped")]
    Stopped,
    /// The command failed.
    #[error("{0}")]
    Failed(String),
}

impl Client {
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)
    }

    /// Starts listening on `addr`; returns the address bound (a port 0 resolved).
    pub async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, NodeError> {
        self.ask(|reply| Command::Listen { addr, reply })
            .await?
            .map_err(NodeError::Failed)
    }

    /// Dials `addr` (which must end in `/p2p/<peer id>` or reach a node that says who it is);
    /// returns the peer once connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        self.ask(|reply| Command::Dial { addr, reply })
            .await?
            .map_err(NodeError::Failed)
    }

    /// Syncs every record the ledger lets this node share with `peer`; returns once every
    /// session has ended, with what each did.
    pub async fn sync(&self, peer: PeerId) -> Result<Synced, NodeError> {
        self.ask(|reply| Command::Sync { peer, reply }).await
    }

    /// What the node holds.
    pub async fn held(&self) -> Result<Vec<Held>, NodeError> {
        self.ask(|reply| Command::Held { reply }).await
    }
}

/// The libp2p identity of a node: its device key.
pub fn keypair(home: &Home) -> Keypair {
    Keypair::ed25519_from_bytes(home.device_key().seed().to_vec())
        .expect("a 32-byte Ed25519 seed is a valid key")
}

fn to_libp2p(peer: &PeerId) -> libp2p::PeerId {
    peer.to_string()
        .parse()
        .expect("a phr PeerId is a libp2p PeerId")
}

fn from_libp2p(peer: &libp2p::PeerId) -> Option<PeerId> {
    peer.to_string().parse().ok()
}

/// A node: the swarm, the engine and the home they serve.
pub struct Node {
    swarm: Swarm<Behaviour>,
    home: Home,
    engine: Engine,
    listening: Vec<oneshot::Sender<Result<Multiaddr, String>>>,
    dialing: BTreeMap<libp2p::PeerId, Vec<oneshot::Sender<Result<PeerId, String>>>>,
    /// Sync commands waiting for their sessions to end: the peer, sessions left, results.
    waiting: Vec<(PeerId, usize, Synced, oneshot::Sender<Synced>)>,
    next_session: u64,
    inbox: mpsc::Receiver<Command>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer", &self.swarm.local_peer_id())
            .field("records", &self.engine.replicas().len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node serving `home`, not yet listening. Returns it with a handle; run it with
    /// [`Node::run`].
    pub fn new(home: Home) -> Result<(Node, Client), NodeError> {
        Node::with_options(home, &swarm::Options::default())
    }

    /// A node serving `home` with a swarm set up by `options`.
    pub fn with_options(home: Home, options: &swarm::Options) -> Result<(Node, Client), NodeError> {
        let failed = |e: &dyn std::fmt::Display| NodeError::Failed(e.to_string());
        let (vault, age) = home.sync_parts();
        let engine = Engine::open(vault, home.peer_id(), age).map_err(|e| failed(&e))?;
        let swarm = swarm::build(keypair(&home), options)?;
        let (commands, inbox) = mpsc::channel(COMMANDS_MAX);
        let node = Node {
            swarm,
            home,
            engine,
            listening: Vec::new(),
            dialing: BTreeMap::new(),
            waiting: Vec::new(),
            next_session: u64::from_le_bytes(phr_core::keys::random_array()),
            inbox,
        };
        Ok((node, Client { commands }))
    }

    /// Runs the event loop until every [`Client`] is dropped; returns the home.
    pub async fn run(mut self) -> Home {
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                command = self.inbox.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = tick.tick() => {
                    let (vault, age) = self.home.sync_parts();
                    let out = self.engine.tick(vault, age, now_ms());
                    self.send_requests(out);
                }
            }
            self.settle_waiting();
        }
        self.home
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr) {
                Ok(_) => self.listening.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            },
            Command::Dial { addr, reply } => {
                let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
                    let _ = reply.send(Err(format!("{addr} does not end in /p2p/<peer id>")));
                    return;
                };
                if self.swarm.is_connected(&peer) {
                    let _ =
                        reply.send(from_libp2p(&peer).ok_or_else(|| "not an Ed25519 peer".into()));
                    return;
                }
                match self.swarm.dial(addr) {
                    Ok(()) => self.dialing.entry(peer).or_default().push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Sync { peer, reply } => {
                let (vault, age) = self.home.sync_parts();
                let session = self.next_session;
                self.next_session = self.next_session.wrapping_add(1 << 16);
                let out = self.engine.start(vault, age, peer, None, session, now_ms());
                let sessions = out.len();
                self.send_requests(out);
                self.waiting.push((peer, sessions, Vec::new(), reply));
            }
            Command::Held { reply } => {
                let held = self
                    .engine
                    .replicas()
                    .values()
                    .map(|replica| Held {
                        record: replica.id(),
                        blobs: Section::ALL
                            .into_iter()
                            .map(|s| (s, replica.blob_ids(s).count()))
                            .filter(|(_, n)| *n > 0)
                            .collect(),
                        ledger_ops: replica.ledger().len(),
                    })
                    .collect();
                let _ = reply.send(held);
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                for reply in self.listening.drain(..) {
                    let _ = reply.send(Ok(address.clone()));
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                tracing::info!(peer = %peer_id, "connected");
                for reply in self.dialing.remove(&peer_id).unwrap_or_default() {
                    let _ = reply
                        .send(from_libp2p(&peer_id).ok_or_else(|| "not an Ed25519 peer".into()));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                for reply in self.dialing.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => {
                let Some(from) = from_libp2p(&peer) else {
                    tracing::warn!(%peer, "a peer without an Ed25519 identity; ignored");
                    return;
                };
                let (vault, age) = self.home.sync_parts();
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        let reply = self.engine.receive(vault, age, from, &request.0, now_ms());
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, Frame(reply.unwrap_or_default()));
                    }
                    // The empty answer to a closing request.
                    request_response::Message::Response { response, .. }
                        if response.0.is_empty() => {}
                    request_response::Message::Response { response, .. } => {
                        if let Some(next) =
                            self.engine.receive(vault, age, from, &response.0, now_ms())
                        {
                            self.swarm
                                .behaviour_mut()
                                .sync
                                .send_request(&peer, Frame(next));
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure { peer, error, .. },
            )) => {
                tracing::warn!(%peer, %error, "a sync request failed; the session resends or ends")
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::InboundFailure { peer, error, .. },
            )) => tracing::warn!(%peer, %error, "a sync request from a peer failed"),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(_)) => {}
            SwarmEvent::Behaviour(event) => {
                for learnt in swarm::on_event(&mut self.swarm, event) {
                    self.on_learnt(learnt);
                }
            }
            _ => {}
        }
    }

    /// Remembers where a peer can be reached.
    fn on_learnt(&mut self, learnt: swarm::Learnt) {
        tracing::debug!(peer = %learnt.peer, addrs = ?learnt.addrs, how = learnt.how, "learnt addresses");
        for addr in learnt.addrs {
            self.swarm.add_peer_address(learnt.peer, addr);
        }
    }

    fn send_requests(&mut self, out: phr_core::sync::engine::Outbox) {
        for (peer, bytes) in out {
            self.swarm
                .behaviour_mut()
                .sync
                .send_request(&to_libp2p(&peer), Frame(bytes));
        }
    }

    /// Hands ended sessions to the sync commands waiting for them.
    fn settle_waiting(&mut self) {
        for ended in self.engine.take_ended() {
            let (peer, result) = match ended {
                Ended::Synced {
                    peer,
                    record,
                    stats,
                } => {
                    tracing::info!(%peer, %record, ?stats, "synced");
                    (peer, Ok((record, stats)))
                }
                Ended::Failed { peer, error } => {
                    if error.is_peers_fault() {
                        // A peer that breaks the protocol is cut off; it may come back and try
                        // again, with a fresh session.
                        tracing::warn!(%peer, %error, "disconnecting a peer that broke the sync protocol");
                        let _ = self.swarm.disconnect_peer_id(to_libp2p(&peer));
                    } else {
                        tracing::warn!(%peer, %error, "a sync session ended early");
                    }
                    (peer, Err(error.to_string()))
                }
            };
            if let Some(waiting) = self.waiting.iter_mut().find(|w| w.0 == peer && w.1 > 0) {
                waiting.1 -= 1;
                waiting.2.push(result);
            }
        }
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.1 == 0);
        self.waiting = waiting;
        for (_, _, results, reply) in done {
            let _ = reply.send(results);
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
