//! The node's control API: what `phr-node` and `phr` say to each other on 127.0.0.1.
//!
//! A running node writes [`ControlFile`] to `HOME/control.json` (mode 0600): where its API listens
//! and the bearer token every request must carry. Only a process that can read the home can talk
//! to the node. The messages below are JSON; the routes are listed in `docs/ARCHITECTURE.md`
//! ("Control API").
//!
//! The node holds the home's vault while it runs, and redb lets one process open a vault at a
//! time. A `phr` command that needs the home asks the node for a **lease** (`POST /lease`): the
//! node parks the home (its keys stay in memory; the vault and the lock are released), queues
//! what peers send meanwhile, and answers. The command opens the home as usual, and ends the
//! lease (`POST /release`) after closing it; the node reopens the home, reads what changed and
//! offers it to connected peers at once. A lease whose holder exits without ending it ends when
//! the node sees that process gone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::section::Section;

/// The file a running node writes into its home.
pub const CONTROL_FILE: &str = "control.json";

/// The header every control request carries: `Authorization: Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// Where a running node's control API listens, and its token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlFile {
    /// The daemon's process id.
    pub pid: u32,
    /// `127.0.0.1:<port>`.
    pub api: String,
    /// The bearer token (64 hex digits), new at every start.
    pub token: String,
    /// This node's PeerId.
    pub peer: String,
    /// Where this node serves emergency links' manifests (`.../shl`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_url: Option<String>,
}

/// `GET /status`: the node, its records and its peers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's PeerId.
    pub peer: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The addresses it listens on, each ending in `/p2p/<peer>`.
    pub listening: Vec<String>,
    /// Whether it runs as a circuit relay.
    pub relay: bool,
    /// Whether a `phr` command holds the home right now.
    pub leased: bool,
    /// The records it holds.
    pub records: Vec<RecordStatus>,
    /// The peers it knows.
    pub peers: Vec<PeerStatus>,
}

/// One record as the node holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordStatus {
    /// The record id (32 hex digits).
    pub record: String,
    /// Blobs held per section.
    pub blobs: BTreeMap<Section, usize>,
    /// Consent-ledger operations held.
    pub ledger_ops: usize,
    /// Blobs held here that no peer is known to hold yet: not confirmed by a sync that finished
    /// since the node started.
    pub unsynced: usize,
}

/// One peer as the node knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its PeerId.
    pub peer: String,
    /// Its name, from a record's ledger or this home's contacts, if known.
    pub name: Option<String>,
    /// Where it can be reached, as far as this node knows.
    pub addrs: Vec<String>,
    /// Whether it is connected now.
    pub connected: bool,
    /// The records held here that admit it (ids).
    pub records: Vec<String>,
    /// When a sync with it last finished (RFC 3339).
    pub last_sync: Option<String>,
    /// Why the last sync or dial failed, if it did.
    pub last_error: Option<String>,
    /// The records held here that withdrew it: `revoked` (a provider's grants) or `removed`
    /// (a device), with the record id. It is sent nothing but the news.
    #[serde(default)]
    pub withdrawn: Vec<Withdrawn>,
}

/// A record that withdrew a peer's access.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawn {
    /// The record's id.
    pub record: String,
    /// `revoked` or `removed`.
    pub how: String,
}

/// `POST /peers`: dial a peer and remember its address.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddPeer {
    /// A multiaddr ending in `/p2p/<peer id>`.
    pub addr: String,
}

/// The answer to `POST /peers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerAdded {
    /// The peer now connected.
    pub peer: String,
}

/// The answer to `POST /sync`: the run to follow with `GET /sync/<id>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncStarted {
    /// The run's id.
    pub id: u64,
}

/// `GET /sync/<id>`: how a sync run is going.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncProgress {
    /// Whether every peer of the run has finished (in step, failed or unreachable).
    pub done: bool,
    /// One entry per admitted peer.
    pub peers: Vec<PeerSync>,
}

/// One peer of a sync run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerSync {
    /// Its PeerId.
    pub peer: String,
    /// Its name, if known.
    pub name: Option<String>,
    /// `dialing`, `syncing`, `in-sync`, `failed` or `unreachable`.
    pub state: String,
    /// Why it failed or is unreachable.
    pub error: Option<String>,
    /// Sync messages' bytes sent to it in this run.
    pub bytes_sent: usize,
    /// Bytes received from it.
    pub bytes_received: usize,
    /// Items (ledger operations and blobs) new to this node, stored.
    pub stored: usize,
    /// Items sent to it.
    pub sent: usize,
}

/// `POST /lease`: a `phr` command asks for the home.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The command's process id: the lease ends if that process is gone.
    pub pid: u32,
}

/// The answer to `POST /lease`, sent once the home is released.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lease {
    /// The lease, to end with `POST /release`.
    pub lease: u64,
}

/// An error answer: what went wrong, for the user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// The message.
    pub error: String,
}

/// `POST /slots`: ask a practice's node, live, for its free slots in a span.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlotsAsk {
    /// The practice's node (its PeerId).
    pub provider: String,
    /// The span asked about.
    pub query: crate::appointments::SlotsQuery,
}

/// The answer to `POST /slots`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlotsFound {
    /// The free slots, earliest first.
    pub slots: Vec<crate::appointments::OfferedSlot>,
    /// How long the round trip took, in milliseconds.
    pub round_trip_ms: u64,
}
