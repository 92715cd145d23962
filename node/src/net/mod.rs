//! The node's event loop: the libp2p swarm, the sync engine, the home they serve, and the
//! commands of [`Client`] handles (the control API among them).
//!
//! One task owns the [`Swarm`], the sync [`Engine`] and the [`Home`], and runs a `select!` loop
//! over swarm events, commands (a bounded channel, each command with a oneshot for its answer),
//! and a clock tick. Every sync message travels as one request-response exchange on
//! [`SYNC_PROTOCOL`](crate::swarm::SYNC_PROTOCOL): a session's request is a libp2p request, its
//! answer the libp2p response. A closing request, which the protocol does not answer, gets an
//! empty response so the exchange completes.
//!
//! What the loop does on its own:
//!
//! - **Offers changes as they happen.** A peer that connects is synced with at once. A change
//!   made here (a `phr` command that held the home, see [`crate::control`]) is offered to every
//!   connected peer as soon as the command ends, and items received from one peer are offered to
//!   the others. A sync every [`RESYNC_MS`] with each connected peer is the safety net.
//! - **Keeps in touch.** Every peer that a held record admits and whose address is known (from
//!   this home's contacts, `phr peers add`, identify, mDNS, Kademlia, or remembered from before
//!   a restart) is dialled at every address known for it, and dialled again with exponential
//!   backoff ([`BACKOFF_MIN_MS`] to [`BACKOFF_MAX_MS`]) while it cannot be reached; a peer with
//!   no known address is looked up in Kademlia and through relays.
//! - **Refuses what it should.** The engine decides who may have what by the consent ledger; a
//!   peer no ledger admits is answered as if this node held nothing, and the loop logs why. A
//!   peer whose message breaks the protocol (garbage, over the size limits, out of turn), or that
//!   sends more than [`REQUESTS_PER_WINDOW_MAX`] requests in [`FLOOD_WINDOW_MS`]
//!   ([`STRANGER_REQUESTS_PER_WINDOW_MAX`] if no held record admits it), is
//!   disconnected and kept out for [`BLOCK_MS`]; other peers are served as before.
//! - **Lends the home.** While a `phr` command holds a lease, the home is parked: messages from
//!   peers wait in a bounded queue ([`PARKED_QUEUE_MAX`]) and are answered once the home is back.
//!
//! This file has the loop and the sync traffic; `client.rs` the handle and its commands,
//! `peers.rs` addresses, relays and lookups, `remembered.rs` the addresses kept across restarts
//! (`peers.json` and its journal), `lease.rs` lending the home, `runs.rs` `phr sync`
//! runs, `status.rs` what `phr node status` shows, `guard.rs` cutting off hostile peers.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::Duration,
};

use libp2p::{
    Multiaddr, Swarm,
    futures::StreamExt,
    identity::Keypair,
    multiaddr::Protocol,
    request_response::{self, ResponseChannel},
    swarm::{DialError, SwarmEvent, dial_opts::DialOpts},
};
use phr_core::{
    api,
    home::{Home, Parked},
    keys::{BlobId, PeerId, RecordId},
    section::Section,
    sync::{Ended, Engine, SessionStats},
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    codec,
    swarm::{self, Behaviour, BehaviourEvent, Frame},
};

mod client;
mod guard;
mod lease;
pub mod links;
mod peers;
mod remembered;
mod runs;
mod slots;
mod status;

pub use client::{Client, Held, NodeError, Synced};
use client::{Command, Reply};
pub use remembered::PEERS_JOURNAL_BYTES_MAX;
use remembered::Remembered;

/// Commands queued for the event loop at most; senders wait beyond it.
pub const COMMANDS_MAX: usize = 64;

/// How often sessions are given the time (to resend or give up), and peers are redialled.
pub const TICK_MS: u64 = 1_000;

/// How often each connected peer is synced with even if nothing seems to have changed.
pub const RESYNC_MS: i64 = 30_000;

/// Admitted peers not connected that one tick dials or looks up at most.
pub const DIALS_PER_TICK_MAX: usize = 64;

/// How often a node asks again for a reservation a relay refused or ended.
pub const RESERVATION_RETRY_MS: i64 = 30_000;

/// The first wait before dialling an unreachable peer again; it doubles with each failure.
pub const BACKOFF_MIN_MS: i64 = 1_000;

/// The longest wait between dials of an unreachable peer.
pub const BACKOFF_MAX_MS: i64 = 300_000;

/// The window flood control counts each peer's requests in.
pub const FLOOD_WINDOW_MS: i64 = 10_000;

/// Requests one peer may send in one [`FLOOD_WINDOW_MS`] by default; a peer over it is flooding
/// and is cut off. A thousand a second on average: far more than syncing thousands of shared
/// records needs, and far fewer than would keep the node from serving anyone else.
pub const REQUESTS_PER_WINDOW_MAX: u32 = 10_000;

/// Requests a peer that is not admitted ([`crate::admission`]) may send in one
/// [`FLOOD_WINDOW_MS`]: a device whose record waits for a provider's acceptance syncs once in
/// [`RESYNC_MS`], a few requests a session; a stranger over it is flooding.
pub const STRANGER_REQUESTS_PER_WINDOW_MAX: u32 = 500;

/// How long a peer cut off for breaking the protocol or flooding is kept out.
pub const BLOCK_MS: i64 = 60_000;

/// Messages from peers kept while the home is lent to a `phr` command; later ones are dropped
/// (their sender resends).
pub const PARKED_QUEUE_MAX: usize = 1_024;

/// Bytes of the messages kept while the home is lent out: room for the largest message
/// (`SYNC_MESSAGE_BYTES_MAX`) and more, not for a flood held in memory.
pub const PARKED_QUEUE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Requests from peers no held record admits that wait for the node to have nothing else to
/// do: an admitted peer's request is always served first, so a flood of strangers' requests
/// delays only other strangers. Past this (or [`STRANGERS_WAITING_BYTES_MAX`]) a stranger's
/// request is dropped unanswered, without cutting its sender off (a device whose record waits
/// for acceptance sends again at its next sync).
pub const STRANGERS_WAITING_MAX: usize = 256;

/// Strangers' requests served per second, by all strangers together; the rest wait their turn
/// ([`STRANGERS_WAITING_MAX`]). Waiting until nothing else is ready is not enough on its own: a
/// fleet of strangers keeping requests in flight makes the node serve thousands a second, and
/// every one costs the transport's work (decryption, streams) that an admitted peer's requests
/// then queue behind (measured: honest sync 10.7x slower under the benchmark's fleet). A device
/// whose record waits for a provider's acceptance needs a few requests a session.
pub const STRANGER_REQUESTS_PER_SECOND_MAX: u32 = 200;

/// Strangers' requests that may be served at once after a quiet spell, within the rate above.
pub const STRANGER_REQUESTS_BURST_MAX: u32 = 20;

/// Bytes of the strangers' requests waiting: a few of the largest a stranger may send
/// (`codec::STRANGER_FRAME_BYTES_MAX`).
pub const STRANGERS_WAITING_BYTES_MAX: usize = 24 * 1024 * 1024;

/// The longest a `phr` command may hold the home; then the node takes it back.
pub const LEASE_MS_MAX: i64 = 600_000;

/// How long a sync run (`phr sync`) waits for peers before calling the rest unreachable.
pub const SYNC_RUN_MS: i64 = 60_000;

/// Addresses remembered per peer at most.
pub const ADDRS_PER_PEER_MAX: usize = 16;

/// Peers remembered at most (beyond the ones the ledgers admit).
pub const PEERS_MAX: usize = 1_024;

/// The libp2p identity of a node: its device key.
pub fn keypair(home: &Home) -> Keypair {
    Keypair::ed25519_from_bytes(home.device_key().seed().to_vec())
        .expect("a 32-byte Ed25519 seed is a valid key")
}

/// A constant's value as the rate limiter takes it.
fn nonzero(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).expect("a budget above zero")
}

fn to_libp2p(peer: &PeerId) -> libp2p::PeerId {
    peer.to_string()
        .parse()
        .expect("a phr PeerId is a libp2p PeerId")
}

fn from_libp2p(peer: &libp2p::PeerId) -> Option<PeerId> {
    peer.to_string().parse().ok()
}

/// What the node knows of one peer.
#[derive(Debug, Default)]
struct Peer {
    addrs: Vec<Multiaddr>,
    connected: bool,
    /// When to dial it next if it is out of reach, and the wait after that.
    next_dial_ms: i64,
    backoff_ms: i64,
    last_sync_ms: Option<i64>,
    last_resync_ms: i64,
    last_error: Option<String>,
    /// Requests counted in the current flood-control window (its start).
    window_ms: i64,
    requests: u32,
    blocked_until_ms: i64,
    /// A change arrived while a session with it ran: sync again when it ends.
    again: bool,
}

/// The home, open or lent to a `phr` command.
enum Slot {
    Open(Box<Home>),
    Parked {
        parked: Box<Parked>,
        lease: u64,
        pid: u32,
        since_ms: i64,
        /// The command ended the lease, but the home could not be reopened yet.
        released: bool,
    },
    /// Only while switching between the two.
    Switching,
}

/// A message from a peer that waits while the home is lent out.
enum Queued {
    Request {
        peer: libp2p::PeerId,
        bytes: Vec<u8>,
        channel: ResponseChannel<Frame>,
    },
    Response {
        peer: libp2p::PeerId,
        bytes: Vec<u8>,
    },
}

/// One peer of a sync run.
#[derive(Debug)]
struct RunPeer {
    state: RunState,
    results: Vec<Result<SessionStats, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RunState {
    Dialing,
    Syncing,
    InSync,
    Failed(String),
    Unreachable(String),
}

/// A `phr sync` run: every admitted peer, until each is in step, failed or out of reach.
#[derive(Debug)]
struct Run {
    started_ms: i64,
    peers: BTreeMap<PeerId, RunPeer>,
}

impl Run {
    fn done(&self) -> bool {
        self.peers
            .values()
            .all(|p| !matches!(p.state, RunState::Dialing | RunState::Syncing))
    }
}

/// A node: the swarm, the engine and the home they serve.
pub struct Node {
    swarm: Swarm<Behaviour>,
    home: Slot,
    engine: Engine,
    me: PeerId,
    relay: bool,
    requests_per_window: u32,
    listening: Vec<Reply<Result<Multiaddr, String>>>,
    listen_addrs: Vec<Multiaddr>,
    dialing: BTreeMap<libp2p::PeerId, Vec<Reply<Result<PeerId, String>>>>,
    /// Sync commands waiting for their sessions with a peer to end, with the results so far.
    waiting: Vec<(PeerId, Synced, Reply<Synced>)>,
    /// Callers waiting for a record to be held as they say ([`Client::held_like`]).
    held_waiters: Vec<(RecordId, Held, Reply<Held>)>,
    /// Callers waiting for a sync run to end ([`Client::sync_run_end`]).
    run_waiters: Vec<(u64, Reply<Option<api::SyncProgress>>)>,
    runs: BTreeMap<u64, Run>,
    next_run: u64,
    next_session: u64,
    next_lease: u64,
    peers: BTreeMap<libp2p::PeerId, Peer>,
    /// Addresses kept across restarts: those `phr peers add` gave, and admitted peers'.
    remembered: Remembered,
    /// Contacts with the relay role.
    relay_contacts: BTreeSet<libp2p::PeerId>,
    /// Relays this node listens through (or is asking to), with the listener. A relay that
    /// refuses (it holds no record that admits this node yet) closes the listener, and the
    /// node asks again every [`RESERVATION_RETRY_MS`].
    reserved: BTreeMap<libp2p::PeerId, libp2p::core::transport::ListenerId>,
    /// When the node last asked relays for reservations.
    reservations_asked_ms: i64,
    /// Names from ledgers and contacts, for status.
    /// Names of this home's contacts.
    names: BTreeMap<PeerId, String>,
    /// Names the held records' ledgers give (a contact's name goes first).
    ledger_names: BTreeMap<PeerId, String>,
    /// The engine's [`Engine::ledger_changes`] when the ledgers were last learnt from.
    learnt_at: Option<u64>,
    /// The admitted peers the gate was last told of.
    gate_admitted: BTreeSet<PeerId>,
    /// Per record, the blobs some peer is known to hold (a finished sync showed it).
    confirmed: BTreeMap<RecordId, BTreeSet<BlobId>>,
    queue: VecDeque<Queued>,
    /// The bytes of the messages in `queue`, kept as it fills and empties.
    queued_bytes: usize,
    /// Strangers' requests, served only when nothing else is ready ([`STRANGERS_WAITING_MAX`]),
    /// and their bytes.
    strangers_waiting: VecDeque<Queued>,
    strangers_waiting_bytes: usize,
    /// The strangers' budget ([`STRANGER_REQUESTS_PER_SECOND_MAX`]), and when it has room
    /// again once spent.
    strangers_budget: governor::DefaultDirectRateLimiter,
    strangers_resume: Option<tokio::time::Instant>,
    leases: VecDeque<(u32, Reply<Result<u64, String>>)>,
    /// Commands that need the home, held while it is lent out.
    deferred: Vec<Command>,
    /// The slots protocol: this node's schedule, and questions asked of others.
    slots: slots::Slots,
    /// Emergency link and break-glass requests logged this hour.
    log_budget: links::LogBudget,
    inbox: mpsc::Receiver<Command>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer", &self.me)
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
        let mut engine = Engine::open(vault, home.peer_id(), age).map_err(|e| failed(&e))?;
        engine.set_intake(home.intake().map_err(|e| failed(&e))?);
        engine.set_signer(home.device_key());
        let swarm = swarm::build(keypair(&home), options)?;
        let (commands, inbox) = mpsc::channel(COMMANDS_MAX);
        let admitted: BTreeSet<libp2p::PeerId> = engine
            .admitted_peers(Self::now())
            .iter()
            .map(to_libp2p)
            .collect();
        let remembered = Remembered::open(home.dir(), &|p| admitted.contains(p));
        let mut node = Node {
            swarm,
            me: home.peer_id(),
            home: Slot::Open(Box::new(home)),
            engine,
            relay: options.relay_server,
            requests_per_window: REQUESTS_PER_WINDOW_MAX,
            listening: Vec::new(),
            listen_addrs: Vec::new(),
            dialing: BTreeMap::new(),
            waiting: Vec::new(),
            run_waiters: Vec::new(),
            held_waiters: Vec::new(),
            runs: BTreeMap::new(),
            next_run: 1,
            next_session: u64::from_le_bytes(phr_core::keys::random_array()),
            next_lease: 1,
            peers: BTreeMap::new(),
            remembered,
            names: BTreeMap::new(),
            ledger_names: BTreeMap::new(),
            learnt_at: None,
            gate_admitted: BTreeSet::new(),
            relay_contacts: BTreeSet::new(),
            reserved: BTreeMap::new(),
            reservations_asked_ms: 0,
            confirmed: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            strangers_waiting: VecDeque::new(),
            strangers_waiting_bytes: 0,
            strangers_budget: governor::RateLimiter::direct(
                governor::Quota::per_second(nonzero(STRANGER_REQUESTS_PER_SECOND_MAX))
                    .allow_burst(nonzero(STRANGER_REQUESTS_BURST_MAX)),
            ),
            strangers_resume: None,
            leases: VecDeque::new(),
            deferred: Vec::new(),
            slots: slots::Slots::default(),
            log_budget: links::LogBudget::default(),
            inbox,
        };
        // The gate first: which peers are admitted decides whose addresses are kept.
        node.update_gate();
        node.learn_from_home();
        node.load_schedule();
        Ok((node, Client { commands }))
    }

    /// Whether a message of `bytes` fits in the queue kept while the home is lent out.
    fn room_in_queue(&self, bytes: usize) -> bool {
        self.queue.len() < PARKED_QUEUE_MAX && self.queued_bytes + bytes <= PARKED_QUEUE_BYTES_MAX
    }

    /// Sets how many requests one peer may send in one [`FLOOD_WINDOW_MS`] before it is cut
    /// off (default [`REQUESTS_PER_WINDOW_MAX`]).
    pub fn limit_requests(&mut self, per_window: u32) {
        self.requests_per_window = per_window;
    }

    /// Runs the event loop until every [`Client`] is dropped; returns the home (or `None` if
    /// it was lent out and could not be taken back).
    pub async fn run(mut self) -> Option<Home> {
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        loop {
            // A stranger's request is served only when no command, tick or network event is
            // ready (polled in this order, the last branch runs only when the others are
            // pending), and only within the strangers' budget: once it is spent, the loop
            // sleeps on the time it has room again.
            let stranger_waits = !self.strangers_waiting.is_empty() && self.open_home().is_some();
            let resume = self.strangers_resume;
            tokio::select! {
                biased;
                command = self.inbox.recv() => match command {
                    Some(Command::Stop) | None => break,
                    Some(command) => self.on_command(command),
                },
                _ = tick.tick() => self.on_tick(),
                event = self.swarm.select_next_some() => self.on_event(event),
                () = tokio::time::sleep_until(resume.unwrap_or_else(tokio::time::Instant::now)),
                    if stranger_waits && resume.is_some() => self.strangers_resume = None,
                () = std::future::ready(()), if stranger_waits && resume.is_none() => {
                    self.serve_stranger()
                }
            }
            self.settle();
        }
        if let Slot::Parked { .. } = self.home {
            self.resume();
        }
        match std::mem::replace(&mut self.home, Slot::Switching) {
            Slot::Open(home) => Some(*home),
            _ => None,
        }
    }

    fn open_home(&self) -> Option<&Home> {
        match &self.home {
            Slot::Open(home) => Some(home),
            _ => None,
        }
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_millisecond()
    }

    fn on_command(&mut self, command: Command) {
        let needs_home = matches!(
            command,
            Command::Sync { .. }
                | Command::SyncAll { .. }
                | Command::LinkManifest { .. }
                | Command::BreakGlass { .. }
        );
        if needs_home && self.open_home().is_none() {
            self.deferred.push(command);
            return;
        }
        match command {
            // The event loop takes it before it gets here.
            Command::Stop => {}
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr) {
                Ok(_) => self.listening.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            },
            Command::Dial {
                addr,
                remember,
                reply,
            } => self.dial(addr, remember, reply),
            Command::Sync { peer, reply } => {
                // Sessions already under way with the peer (a connection starts them) count too.
                self.start_sync(peer);
                self.waiting.push((peer, Vec::new(), reply));
            }
            Command::SyncAll { reply } => {
                let id = self.start_run();
                let _ = reply.send(id);
            }
            Command::SyncProgress { id, reply } => {
                let _ = reply.send(self.runs.get(&id).map(|run| self.progress(run)));
            }
            Command::RunEnd { id, reply } => match self.runs.get(&id) {
                Some(_) => self.run_waiters.push((id, reply)),
                None => {
                    let _ = reply.send(None);
                }
            },
            Command::Held { reply } => {
                let _ = reply.send(self.held());
            }
            Command::HeldLike {
                record,
                like,
                reply,
            } => {
                self.held_waiters.push((record, like, reply));
                self.answer_held_waiters();
            }
            Command::HeldRecord { record, reply } => {
                let _ = reply.send(self.held_record(&record));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Lease { pid, reply } => {
                self.leases.push_back((pid, reply));
                self.grant_lease();
            }
            Command::Slots {
                provider,
                query,
                reply,
            } => self.ask_slots(provider, query, reply),
            Command::LinkManifest {
                id,
                request,
                address,
                reply,
            } => self.on_link_manifest(id, request, address, reply),
            Command::BreakGlass {
                request,
                url,
                address,
                reply,
            } => self.on_break_glass(request, url, address, reply),
            Command::Release { lease, reply } => {
                let result = match &self.home {
                    Slot::Parked { lease: held, .. } if *held == lease => {
                        if let Slot::Parked { released, .. } = &mut self.home {
                            *released = true;
                        }
                        self.resume();
                        Ok(())
                    }
                    _ => Err(format!("lease {lease} is not held")),
                };
                let _ = reply.send(result);
                self.grant_lease();
            }
        }
    }

    /// Starts a session with `peer` for every held record that admits it; returns how many.
    fn start_sync(&mut self, peer: PeerId) -> usize {
        let Slot::Open(home) = &self.home else {
            return 0;
        };
        let (vault, age) = home.sync_parts();
        let session = self.next_session;
        self.next_session = self.next_session.wrapping_add(1 << 16);
        let out = self
            .engine
            .start(vault, age, peer, None, session, Self::now());
        let sessions = out.len();
        self.send_requests(out);
        if let Some(p) = self.peers.get_mut(&to_libp2p(&peer)) {
            p.last_resync_ms = Self::now();
        }
        sessions
    }

    /// Offers what this node holds to `peer`, now or as soon as the session under way ends.
    fn offer(&mut self, peer: libp2p::PeerId) {
        let Some(phr_peer) = from_libp2p(&peer) else {
            return;
        };
        if self.engine.is_initiating_with(&phr_peer) {
            self.peers.entry(peer).or_default().again = true;
        } else {
            self.start_sync(phr_peer);
        }
    }

    /// Offers everything this node holds to every connected peer: after a command that changed
    /// who is admitted (a grant, a patient accepted), when any record may newly admit a peer.
    pub(super) fn offer_all(&mut self) {
        self.engine.take_changed();
        if self.open_home().is_none() {
            return;
        }
        let connected: Vec<libp2p::PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            self.offer(peer);
        }
    }

    /// Offers the records that changed ([`Engine::take_changed`]) to the connected peers each
    /// admits, but the peer all its changes came from: a session per such record now, or, with
    /// a session under way, a full offer as soon as it ends. One patient's write costs the
    /// sessions of that record, not a walk of every record for every connected peer.
    fn offer_changed(&mut self) {
        let changed = self.engine.take_changed();
        if changed.is_empty() {
            return;
        }
        let Slot::Open(home) = &self.home else {
            return;
        };
        let (vault, age) = home.sync_parts();
        let now = Self::now();
        let connected: Vec<libp2p::PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            let Some(phr_peer) = from_libp2p(&peer) else {
                continue;
            };
            let records: BTreeSet<RecordId> = changed
                .iter()
                .filter(|(_, from)| **from != Some(phr_peer))
                .map(|(record, _)| *record)
                .collect();
            if self.engine.is_initiating_with(&phr_peer) {
                let admits = records.iter().any(|record| {
                    self.engine
                        .replicas()
                        .get(record)
                        .is_some_and(|r| r.admits(&phr_peer, now))
                });
                if admits {
                    self.peers.entry(peer).or_default().again = true;
                }
                continue;
            }
            let session = self.next_session;
            self.next_session = self.next_session.wrapping_add(1 << 16);
            let out = self
                .engine
                .start_for(vault, age, phr_peer, &records, session, now);
            for (to, bytes) in out {
                self.swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&to_libp2p(&to), Frame(bytes));
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Self::now();
        if let Slot::Parked {
            pid,
            since_ms,
            released,
            ..
        } = &self.home
        {
            let gone = std::path::Path::new("/proc").exists()
                && !std::path::Path::new(&format!("/proc/{pid}")).exists();
            let expired = now - since_ms > LEASE_MS_MAX;
            if (gone || expired) && !released {
                tracing::warn!(
                    pid,
                    "the phr command holding the home is gone; taking it back"
                );
            }
            if gone || expired || *released {
                self.resume();
                self.grant_lease();
            }
            return;
        }
        if now - self.reservations_asked_ms >= RESERVATION_RETRY_MS {
            self.reserve_on_relays();
        }
        let Slot::Open(home) = &self.home else {
            return;
        };
        let (vault, age) = home.sync_parts();
        let out = self.engine.tick(vault, age, now);
        self.send_requests(out);
        // Keep in touch with every admitted peer, dialling or looking up a bounded number a
        // tick: a practice's node restarted with 10,000 patients' devices to find does not
        // start 10,000 lookups at once (the rest are reached on the ticks after).
        let mut dials = 0;
        for peer in self.engine.admitted_peers(now) {
            let lp = to_libp2p(&peer);
            if self.swarm.is_connected(&lp) {
                let due = self
                    .peers
                    .get(&lp)
                    .is_none_or(|p| now - p.last_resync_ms >= RESYNC_MS);
                if due && !self.engine.is_initiating_with(&peer) {
                    self.start_sync(peer);
                }
                continue;
            }
            if dials >= DIALS_PER_TICK_MAX {
                continue;
            }
            let entry = self.peers.entry(lp).or_default();
            if now < entry.next_dial_ms || now < entry.blocked_until_ms {
                continue;
            }
            dials += 1;
            entry.backoff_ms = (entry.backoff_ms * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
            entry.next_dial_ms = now + entry.backoff_ms;
            if entry.addrs.is_empty() {
                self.lookup(lp);
            } else if let Err(error) = self.redial(lp) {
                tracing::debug!(peer = %lp, %error, "cannot dial");
            }
        }
        // Runs past their time: whoever has not answered is out of reach.
        for run in self.runs.values_mut() {
            if now - run.started_ms > SYNC_RUN_MS {
                for p in run.peers.values_mut() {
                    if matches!(p.state, RunState::Dialing | RunState::Syncing) {
                        p.state = RunState::Unreachable("no answer in time".into());
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                for reply in self.listening.drain(..) {
                    let _ = reply.send(Ok(address.clone()));
                }
                self.reserve_on_relays();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let before = self.reserved.len();
                self.reserved.retain(|_, l| *l != listener_id);
                if self.reserved.len() < before {
                    tracing::info!(
                        ?reason,
                        "a relay refused or ended this node's reservation; asking again later"
                    );
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => self.on_connected(peer_id, num_established.get(), endpoint.is_dialer()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::info!(peer = %peer_id, cause = ?cause, "disconnected");
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connected = false;
                }
                if let Some(peer) = from_libp2p(&peer_id) {
                    self.engine.disconnected(&peer);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.last_error = Some(format!("cannot reach it: {error}"));
                }
                for reply in self.dialing.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(format!(
                        "cannot reach {peer}: {error}. Check that its node is running and that \
                         the address is current (`phr node status` on it prints it)"
                    )));
                }
                if let Some(phr_peer) = from_libp2p(&peer) {
                    for run in self.runs.values_mut() {
                        if let Some(p) = run.peers.get_mut(&phr_peer)
                            && p.state == RunState::Dialing
                        {
                            p.state = RunState::Unreachable(error.to_string());
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if self.flooding(peer) || self.unreadable(peer, &request) {
                        return;
                    }
                    if self.open_home().is_none() {
                        if self.room_in_queue(request.0.len()) {
                            self.queued_bytes += request.0.len();
                            self.queue.push_back(Queued::Request {
                                peer,
                                bytes: request.0,
                                channel,
                            });
                        }
                        return;
                    }
                    if !self.swarm.behaviour().gate.admission().is_admitted(&peer) {
                        self.stranger_waits(peer, request.0, channel);
                        return;
                    }
                    self.on_request(peer, request.0, channel);
                }
                // The empty answer to a closing request.
                request_response::Message::Response { response, .. } if response.0.is_empty() => {}
                request_response::Message::Response { response, .. } => {
                    if self.unreadable(peer, &response) {
                        return;
                    }
                    if self.open_home().is_none() {
                        if self.room_in_queue(response.0.len()) {
                            self.queued_bytes += response.0.len();
                            self.queue.push_back(Queued::Response {
                                peer,
                                bytes: response.0,
                            });
                        }
                        return;
                    }
                    self.on_response(peer, response.0);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure { peer, error, .. },
            )) => {
                tracing::warn!(%peer, %error, "a sync request failed; the session resends or ends")
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::InboundFailure { peer, error, .. },
            )) => {
                if let request_response::InboundFailure::Io(io) = &error {
                    // A frame that is not CBOR, or larger than the codec's limit.
                    self.cut_off(
                        peer,
                        &format!("it sent a frame this node cannot read: {io}"),
                    );
                } else {
                    tracing::warn!(%peer, %error, "a sync request from a peer failed");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Slots(event)) => self.on_slots_event(event),
            SwarmEvent::Behaviour(event) => {
                for learnt in swarm::on_event(&mut self.swarm, event) {
                    self.on_learnt(learnt);
                }
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, peer: libp2p::PeerId, established: u32, dialer: bool) {
        let now = Self::now();
        let entry = self.peers.entry(peer).or_default();
        if now < entry.blocked_until_ms {
            tracing::info!(%peer, "refusing a peer cut off for breaking the protocol");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        entry.connected = true;
        entry.backoff_ms = 0;
        entry.next_dial_ms = 0;
        for reply in self.dialing.remove(&peer).unwrap_or_default() {
            let _ = reply.send(from_libp2p(&peer).ok_or_else(|| "not an Ed25519 peer".into()));
        }
        if established > 1 {
            return;
        }
        let Some(phr_peer) = from_libp2p(&peer) else {
            tracing::info!(%peer, "refusing a peer without an Ed25519 identity");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        };
        let admitted = self
            .engine
            .replicas()
            .values()
            .filter(|r| r.is_held() && r.admits(&phr_peer, now))
            .count();
        if admitted == 0 {
            // It may be bringing this node a record newly shared with it: it is answered, as a
            // node that holds nothing it may have.
            tracing::info!(
                %peer,
                dialer,
                "connected to a peer no record here admits: it is offered nothing"
            );
        } else {
            tracing::info!(%peer, records = admitted, "connected; syncing");
        }
        for run in self.runs.values_mut() {
            if let Some(p) = run.peers.get_mut(&phr_peer)
                && p.state == RunState::Dialing
            {
                p.state = RunState::Syncing;
            }
        }
        if self.open_home().is_some() {
            self.offer(peer);
        }
    }

    /// Keeps a stranger's request until nothing else is ready, if it fits; else drops it.
    fn stranger_waits(
        &mut self,
        peer: libp2p::PeerId,
        bytes: Vec<u8>,
        channel: ResponseChannel<Frame>,
    ) {
        if self.strangers_waiting.len() >= STRANGERS_WAITING_MAX
            || self.strangers_waiting_bytes + bytes.len() > STRANGERS_WAITING_BYTES_MAX
        {
            tracing::debug!(%peer, "a stranger's request dropped: too many waiting");
            return;
        }
        self.strangers_waiting_bytes += bytes.len();
        self.strangers_waiting.push_back(Queued::Request {
            peer,
            bytes,
            channel,
        });
    }

    /// Serves the stranger's request that waited longest, if the strangers' budget has room;
    /// else notes when it will.
    fn serve_stranger(&mut self) {
        if let Err(not_until) = self.strangers_budget.check() {
            let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
            self.strangers_resume =
                Some(tokio::time::Instant::now() + not_until.wait_time_from(now));
            return;
        }
        if let Some(Queued::Request {
            peer,
            bytes,
            channel,
        }) = self.strangers_waiting.pop_front()
        {
            self.strangers_waiting_bytes -= bytes.len();
            self.on_request(peer, bytes, channel);
        }
    }

    fn on_request(
        &mut self,
        peer: libp2p::PeerId,
        bytes: Vec<u8>,
        channel: ResponseChannel<Frame>,
    ) {
        let Some(from) = from_libp2p(&peer) else {
            return;
        };
        let Slot::Open(home) = &self.home else {
            return;
        };
        let (vault, age) = home.sync_parts();
        let before = (self.engine.taken_in(), self.engine.ledger_changes());
        let reply = self.engine.receive(vault, age, from, &bytes, Self::now());
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, Frame(reply.unwrap_or_default()));
        self.after_receive(before);
    }

    fn on_response(&mut self, peer: libp2p::PeerId, bytes: Vec<u8>) {
        let Some(from) = from_libp2p(&peer) else {
            return;
        };
        let Slot::Open(home) = &self.home else {
            return;
        };
        let (vault, age) = home.sync_parts();
        let before = (self.engine.taken_in(), self.engine.ledger_changes());
        if let Some(next) = self.engine.receive(vault, age, from, &bytes, Self::now()) {
            self.swarm
                .behaviour_mut()
                .sync
                .send_request(&peer, Frame(next));
        }
        self.after_receive(before);
    }

    /// Something new arrived: pass it on to the other connected peers (not back to the one it
    /// came from). What follows from the ledgers (names, addresses kept, the gate's admitted
    /// peers) is worked out again only when a ledger changed: a write of one patient costs the
    /// same at any N.
    fn after_receive(&mut self, (taken_in, ledgers): (u64, u64)) {
        if self.engine.ledger_changes() != ledgers {
            self.learn_from_home();
            self.update_gate();
        }
        if self.engine.taken_in() != taken_in {
            self.offer_changed();
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

    /// Hands ended sessions to the commands and runs waiting for them.
    fn settle(&mut self) {
        let now = Self::now();
        for ended in self.engine.take_ended() {
            let (peer, result) = match ended {
                Ended::Synced {
                    peer,
                    record,
                    stats,
                } => {
                    tracing::info!(%peer, %record, ?stats, "synced");
                    self.confirm(peer, record, now);
                    (peer, Ok((record, stats)))
                }
                Ended::Failed { peer, error } => {
                    if error.is_peers_fault() {
                        self.cut_off(to_libp2p(&peer), &error.to_string());
                    } else {
                        tracing::warn!(%peer, %error, "a sync session ended early");
                    }
                    (peer, Err(error.to_string()))
                }
            };
            let lp = to_libp2p(&peer);
            if let Some(p) = self.peers.get_mut(&lp) {
                match &result {
                    Ok(_) => {
                        p.last_sync_ms = Some(now);
                        p.last_error = None;
                    }
                    Err(e) => p.last_error = Some(e.clone()),
                }
            }
            for run in self.runs.values_mut() {
                if let Some(p) = run.peers.get_mut(&peer)
                    && matches!(p.state, RunState::Syncing | RunState::Dialing)
                {
                    p.results.push(result.clone().map(|(_, stats)| stats));
                }
            }
            for waiting in self.waiting.iter_mut().filter(|w| w.0 == peer) {
                waiting.1.push(result.clone());
            }
        }
        // Peers whose sessions all ended: sync again if something changed meanwhile, and settle
        // the runs waiting for them.
        let again: Vec<libp2p::PeerId> = self
            .peers
            .iter()
            .filter(|(lp, p)| {
                p.again && from_libp2p(lp).is_some_and(|x| !self.engine.is_initiating_with(&x))
            })
            .map(|(lp, _)| *lp)
            .collect();
        for lp in again {
            if let Some(p) = self.peers.get_mut(&lp) {
                p.again = false;
            }
            self.offer(lp);
        }
        for run in self.runs.values_mut() {
            for (peer, p) in &mut run.peers {
                if p.state == RunState::Syncing && !self.engine.is_initiating_with(peer) {
                    p.state = match p.results.iter().find_map(|r| r.as_ref().err()) {
                        Some(error) => RunState::Failed(error.clone()),
                        None => RunState::InSync,
                    };
                }
            }
        }
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| !self.engine.is_initiating_with(&w.0));
        self.waiting = waiting;
        for (_, results, reply) in done {
            let _ = reply.send(results);
        }
        self.answer_held_waiters();
        // Runs that ended since: tell whoever waits for them.
        for (id, reply) in std::mem::take(&mut self.run_waiters) {
            match self.runs.get(&id).map(|run| self.progress(run)) {
                Some(progress) if !progress.done => self.run_waiters.push((id, reply)),
                ended => {
                    let _ = reply.send(ended);
                }
            }
        }
    }
}
