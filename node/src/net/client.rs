//! The handle the node is driven through, and what it answers.

use phr_core::appointments::{OfferedSlot, SlotsQuery};

use super::*;

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

pub(super) type Reply<T> = oneshot::Sender<T>;

/// A request to the event loop.
#[derive(Debug)]
pub(super) enum Command {
    /// Stop: the event loop ends, whatever other clients are still held.
    Stop,
    Listen {
        addr: Multiaddr,
        reply: Reply<Result<Multiaddr, String>>,
    },
    Dial {
        addr: Multiaddr,
        remember: bool,
        reply: Reply<Result<PeerId, String>>,
    },
    Sync {
        peer: PeerId,
        reply: Reply<Synced>,
    },
    SyncAll {
        reply: Reply<u64>,
    },
    SyncProgress {
        id: u64,
        reply: Reply<Option<api::SyncProgress>>,
    },
    RunEnd {
        id: u64,
        reply: Reply<Option<api::SyncProgress>>,
    },
    Held {
        reply: Reply<Vec<Held>>,
    },
    HeldRecord {
        record: RecordId,
        reply: Reply<Option<Held>>,
    },
    HeldLike {
        record: RecordId,
        like: Held,
        reply: Reply<Held>,
    },
    Status {
        reply: Reply<api::NodeStatus>,
    },
    Lease {
        pid: u32,
        reply: Reply<Result<u64, String>>,
    },
    Release {
        lease: u64,
        reply: Reply<Result<(), String>>,
    },
    BreakGlass {
        request: phr_core::emergency::break_glass::Request,
        url: String,
        address: String,
        reply: Reply<Result<Result<phr_core::emergency::break_glass::Granted, String>, String>>,
    },
    LinkManifest {
        id: String,
        request: phr_core::emergency::link::ManifestRequest,
        address: String,
        reply: Reply<Result<phr_core::emergency::link::Answer, String>>,
    },
    Slots {
        provider: PeerId,
        query: SlotsQuery,
        reply: Reply<Result<Vec<OfferedSlot>, String>>,
    },
}

/// A handle to a running node.
#[derive(Clone, Debug)]
pub struct Client {
    pub(super) commands: mpsc::Sender<Command>,
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
    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
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

    /// Dials `addr`, which must end in `/p2p/<peer id>`; returns the peer once connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        self.ask(|reply| Command::Dial {
            addr,
            remember: false,
            reply,
        })
        .await?
        .map_err(NodeError::Failed)
    }

    /// Dials `addr` like [`Client::dial`], and remembers it (in `HOME/peers.json`) to dial again
    /// whenever the peer is out of reach.
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        self.ask(|reply| Command::Dial {
            addr,
            remember: true,
            reply,
        })
        .await?
        .map_err(NodeError::Failed)
    }

    /// Syncs every record the ledger lets this node share with `peer`; returns once every
    /// session has ended, with what each did.
    pub async fn sync(&self, peer: PeerId) -> Result<Synced, NodeError> {
        self.ask(|reply| Command::Sync { peer, reply }).await
    }

    /// Starts syncing with every peer a held record admits (dialling those not connected);
    /// returns the run's id, to follow with [`Client::sync_progress`].
    pub async fn sync_all(&self) -> Result<u64, NodeError> {
        self.ask(|reply| Command::SyncAll { reply }).await
    }

    /// How sync run `id` is going; `None` if there is no such run.
    pub async fn sync_progress(&self, id: u64) -> Result<Option<api::SyncProgress>, NodeError> {
        self.ask(|reply| Command::SyncProgress { id, reply }).await
    }

    /// Waits for sync run `id` to end (every peer in step, failed or out of reach) and returns
    /// how it went; `None` if there is no such run. The node answers when the run ends, so a
    /// caller waits on that, bounded by its own timeout.
    pub async fn sync_run_end(&self, id: u64) -> Result<Option<api::SyncProgress>, NodeError> {
        self.ask(|reply| Command::RunEnd { id, reply }).await
    }

    /// What the node holds.
    pub async fn held(&self) -> Result<Vec<Held>, NodeError> {
        self.ask(|reply| Command::Held { reply }).await
    }

    /// What the node holds of `record` (`None` if it holds none of it). Unlike
    /// [`Client::held`] and [`Client::status`], its cost does not grow with the records held,
    /// so it can be asked often while a node holding many waits for one record to change.
    pub async fn held_record(&self, record: RecordId) -> Result<Option<Held>, NodeError> {
        self.ask(|reply| Command::HeldRecord { record, reply })
            .await
    }

    /// Waits until the node holds `record` as `like` says: as many ledger operations, and as
    /// many blobs of each section `like` lists (others are not compared). The node answers as
    /// soon as it does, so a caller waits on that, bounded by its own timeout.
    pub async fn held_like(&self, record: RecordId, like: Held) -> Result<Held, NodeError> {
        self.ask(|reply| Command::HeldLike {
            record,
            like,
            reply,
        })
        .await
    }

    /// Stops the node: its event loop ends (giving the home back, see [`crate::net::Node::run`])
    /// even while other clients are held, an HTTP connection still open on the control API,
    /// say. A node stopped already is not an error.
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }

    /// The node, its records and its peers.
    pub async fn status(&self) -> Result<api::NodeStatus, NodeError> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Parks the home for process `pid` and returns the lease once the home is free.
    pub async fn lease(&self, pid: u32) -> Result<u64, NodeError> {
        self.ask(|reply| Command::Lease { pid, reply })
            .await?
            .map_err(NodeError::Failed)
    }

    /// Asks the practice's node `provider`, live, for its free slots in `query`'s span. Refused
    /// unless a record this node holds admits `provider`; the practice answers only peers its
    /// records admit.
    pub async fn slots(
        &self,
        provider: PeerId,
        query: SlotsQuery,
    ) -> Result<Vec<OfferedSlot>, NodeError> {
        self.ask(|reply| Command::Slots {
            provider,
            query,
            reply,
        })
        .await?
        .map_err(NodeError::Failed)
    }

    /// Answers a manifest request for emergency link `id` from `address`, the access logged
    /// to the patient's record first (see [`crate::emergency`]).
    pub async fn link_manifest(
        &self,
        id: String,
        request: phr_core::emergency::link::ManifestRequest,
        address: String,
    ) -> Result<phr_core::emergency::link::Answer, NodeError> {
        self.ask(|reply| Command::LinkManifest {
            id,
            request,
            address,
            reply,
        })
        .await?
        .map_err(NodeError::Failed)
    }

    /// Answers a break-glass request sent to `url` from `address`: `Ok(Err(why))` if refused
    /// (logged to the patient's record first, unless its card did not verify).
    pub async fn break_glass(
        &self,
        request: phr_core::emergency::break_glass::Request,
        url: String,
        address: String,
    ) -> Result<Result<phr_core::emergency::break_glass::Granted, String>, NodeError> {
        self.ask(|reply| Command::BreakGlass {
            request,
            url,
            address,
            reply,
        })
        .await?
        .map_err(NodeError::Failed)
    }

    /// Ends a lease: the node reopens the home and offers what changed.
    pub async fn release(&self, lease: u64) -> Result<(), NodeError> {
        self.ask(|reply| Command::Release { lease, reply })
            .await?
            .map_err(NodeError::Failed)
    }
}
